module shardlet.test/gotemplatediff

go 1.22
