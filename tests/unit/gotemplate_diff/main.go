// Command gotemplatediff renders text/template cases the way kwok does, for the differential
// test in ../test_gotemplate_diff.py.
//
// stdin:  {"cases": [{"template": "...", "data": <json>}, ...]}
// stdout: [{"out": "...", "err": "...", "phase": "parse"|"exec"|""}, ...]
//
// Data goes through kwok's own conversion (pkg/utils/gotpl/renderer.go): JSON-encode the object,
// then decode it with UseNumber, so numbers reach the template as json.Number.  Non-integral
// numbers are first turned into float64 (as a typed float field would be) so that their text is
// Go's float encoding.  Only the standard library is used; the handful of kwok/sprig functions the
// corpus needs are reimplemented here exactly as kwok/sprig define them.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/template"
)

type tcase struct {
	Template string          `json:"template"`
	Data     json.RawMessage `json:"data"`
}

type result struct {
	Out   string `json:"out"`
	Err   string `json:"err"`
	Phase string `json:"phase"`
}

// kwok pkg/utils/gotpl/funcs.go "Quote".
func quote(s any) string {
	data, err := json.Marshal(s)
	if err != nil {
		return strconv.Quote(fmt.Sprint(s))
	}
	if len(data) == 0 {
		return `""`
	}
	if data[0] == '"' {
		return string(data)
	}
	return strconv.Quote(string(data))
}

// A deterministic stand-in for kwok's "YAML" (which needs sigs.k8s.io/yaml): compact JSON,
// which is valid YAML, with kwok's indentation handling.
func yamlStub(s any, indent ...int) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return "", err
	}
	data := buf.String()
	if len(indent) == 1 && indent[0] > 0 {
		pad := strings.Repeat(" ", indent[0]*2)
		data = strings.ReplaceAll("\n"+data, "\n", "\n"+pad)
	}
	return data, nil
}

// sprig's empty/default/dict.
func empty(given any) bool {
	g := reflect.ValueOf(given)
	if !g.IsValid() {
		return true
	}
	switch g.Kind() {
	default:
		return g.IsNil()
	case reflect.Array, reflect.Slice, reflect.Map, reflect.String:
		return g.Len() == 0
	case reflect.Bool:
		return !g.Bool()
	case reflect.Complex64, reflect.Complex128:
		return g.Complex() == 0
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return g.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return g.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return g.Float() == 0
	case reflect.Struct:
		return false
	}
}

func dfault(d any, given ...any) any {
	if empty(given) || empty(given[0]) {
		return d
	}
	return given[0]
}

func strval(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case error:
		return v.Error()
	case fmt.Stringer:
		return v.String()
	default:
		return fmt.Sprintf("%v", v)
	}
}

func dict(v ...any) map[string]any {
	dict := map[string]any{}
	lenv := len(v)
	for i := 0; i < lenv; i += 2 {
		key := strval(v[i])
		if i+1 >= lenv {
			dict[key] = ""
			continue
		}
		dict[key] = v[i+1]
	}
	return dict
}

// kwok's NodeConditions data: []corev1.NodeCondition through JSON into []any.
const nodeConditionsJSON = `[
 {"type":"Ready","status":"True","lastHeartbeatTime":null,"lastTransitionTime":null,"reason":"KubeletReady","message":"kubelet is posting ready status"},
 {"type":"MemoryPressure","status":"False","lastHeartbeatTime":null,"lastTransitionTime":null,"reason":"KubeletHasSufficientMemory","message":"kubelet has sufficient memory available"},
 {"type":"DiskPressure","status":"False","lastHeartbeatTime":null,"lastTransitionTime":null,"reason":"KubeletHasNoDiskPressure","message":"kubelet has no disk pressure"},
 {"type":"PIDPressure","status":"False","lastHeartbeatTime":null,"lastTransitionTime":null,"reason":"KubeletHasSufficientPID","message":"kubelet has sufficient PID available"},
 {"type":"NetworkUnavailable","status":"False","lastHeartbeatTime":null,"lastTransitionTime":null,"reason":"RouteCreated","message":"RouteController created a route"}
]`

func funcs() template.FuncMap {
	var nodeConditions any
	if err := json.Unmarshal([]byte(nodeConditionsJSON), &nodeConditions); err != nil {
		panic(err)
	}
	podIPs := func(hostNetwork bool) []string {
		if hostNetwork {
			return []string{"192.168.0.1"}
		}
		return []string{"10.0.0.2", "fd00::2"}
	}
	return template.FuncMap{
		"Quote":          quote,
		"Now":            func() string { return "2024-05-06T07:08:09.123456789Z" },
		"StartTime":      func() string { return "2024-05-06T00:00:00Z" },
		"Version":        func() string { return "0.8.0" },
		"NodeConditions": func() any { return nodeConditions },
		"NodeIP":         func() string { return "10.0.0.1" },
		"NodeName":       func() string { return "kwok-node-0" },
		"NodePort":       func() int { return 10250 },
		"NodeIPWith":     func(nodeName string) string { return "192.168.0.1" },
		"NodeIPsWith":    func(nodeName string) []string { return []string{"192.168.0.1"} },
		"PodIPWith": func(nodeName string, hostNetwork bool, uid, name, namespace string) (string, error) {
			return podIPs(hostNetwork)[0], nil
		},
		"PodIPsWith": func(nodeName string, hostNetwork bool, uid, name, namespace string) ([]string, error) {
			return podIPs(hostNetwork), nil
		},
		"YAML":    yamlStub,
		"default": dfault,
		"dict":    dict,
		// Probes for the engine's function-call semantics.
		"fail": func(msg any) (any, error) { return nil, errors.New(fmt.Sprint(msg)) },
		"echo": func(args ...any) []any { return args },
		"nilf": func() any { return nil },
		"strs": func() []string { return []string{"a", "b"} },
		"one":  func() int { return 1 },
		"half": func() float64 { return 0.5 },
		"mkmap": func() map[string]any {
			return map[string]any{"a": 1, "b": "x", "n": nil}
		},
	}
}

// normalize turns non-integral json.Numbers into float64 (a typed float field in kwok).
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
	case json.Number:
		if strings.ContainsAny(string(x), ".eE") {
			f, err := x.Float64()
			if err == nil {
				return f
			}
		}
	}
	return v
}

// kwokData reproduces pkg/utils/gotpl/renderer.go: encode, then decode with UseNumber.
func kwokData(raw json.RawMessage) (any, error) {
	var orig any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&orig); err != nil {
		return nil, err
	}
	orig = normalize(orig)
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(orig); err != nil {
		return nil, err
	}
	var data any
	dec = json.NewDecoder(&buf)
	dec.UseNumber()
	if err := dec.Decode(&data); err != nil {
		return nil, err
	}
	return data, nil
}

func run(c tcase, fm template.FuncMap) (res result) {
	defer func() {
		if r := recover(); r != nil {
			res = result{Err: fmt.Sprint("panic: ", r), Phase: "panic"}
		}
	}()
	t, err := template.New("t").Funcs(fm).Parse(c.Template)
	if err != nil {
		return result{Err: err.Error(), Phase: "parse"}
	}
	data, err := kwokData(c.Data)
	if err != nil {
		return result{Err: err.Error(), Phase: "data"}
	}
	var out strings.Builder
	if err := t.Execute(&out, data); err != nil {
		return result{Out: out.String(), Err: err.Error(), Phase: "exec"}
	}
	return result{Out: out.String()}
}

func main() {
	var in struct {
		Cases []tcase `json:"cases"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fm := funcs()
	results := make([]result, len(in.Cases))
	for i, c := range in.Cases {
		results[i] = run(c, fm)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
