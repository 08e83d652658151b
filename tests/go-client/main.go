// A Go client of the mock LLM server (standard library only): OpenAI chat completions, JSON and
// streamed, over Go's crypto/tls, with HTTP/1.1 or HTTP/2 (ALPN h2).
//
// Usage: go-client http1|http2 SCENARIO...   (or `go-client bench ...`: see bench.go)
//
// Scenarios: chat_json, chat_stream, chat_stream_big (a reply of many 16 KiB records),
// chat_big_request (a request body over 100 KiB), and parallelN:NAME (NAME on N goroutines at
// once). Like the Python clients (tests/clients/common.py) it reads MOCK_BASE, MOCK_CA and
// MOCK_API_KEY and prints one JSON line per call with what it saw. It prints no thread id:
// goroutines move between threads, and the runtime writes requests from goroutines of its own.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	base   = os.Getenv("MOCK_BASE")
	apiKey = os.Getenv("MOCK_API_KEY")
	client *http.Client
	outMu  sync.Mutex
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "go-client: "+format+"\n", args...)
	os.Exit(1)
}

func newClient(version string) *http.Client {
	ca, err := os.ReadFile(os.Getenv("MOCK_CA"))
	if err != nil {
		fail("reading MOCK_CA: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		fail("MOCK_CA holds no PEM certificate")
	}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		MaxIdleConnsPerHost: 16,
	}
	switch version {
	case "http1":
		// A non-nil empty map turns HTTP/2 off: ALPN offers http/1.1 only.
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	case "http2":
		transport.ForceAttemptHTTP2 = true
	default:
		fail("the first argument is http1 or http2, not %q", version)
	}
	return &http.Client{Transport: transport, Timeout: 60 * time.Second}
}

// emit prints one call record, with the fields common to every call.
func emit(name string, fields map[string]any) {
	comm, _ := os.ReadFile("/proc/self/comm")
	exe, _ := os.Executable()
	fields["call"] = name
	fields["pid"] = os.Getpid()
	fields["comm"] = strings.TrimSpace(string(comm))
	fields["exe"] = filepath.Base(exe)
	line, err := json.Marshal(fields)
	if err != nil {
		fail("encoding a call record: %v", err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

func post(body map[string]any) (*http.Response, string) {
	payload, err := json.Marshal(body)
	if err != nil {
		fail("encoding a request: %v", err)
	}
	req, err := http.NewRequest("POST", base+"/v1/chat/completions", bytes.NewReader(payload))
	if err != nil {
		fail("building a request: %v", err)
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("authorization", "Bearer "+apiKey)
	resp, err := client.Do(req)
	if err != nil {
		fail("POST /v1/chat/completions: %v", err)
	}
	return resp, resp.Proto
}

type usage struct {
	PromptTokens     *int `json:"prompt_tokens"`
	CompletionTokens *int `json:"completion_tokens"`
}

type completion struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

func chat(name, prompt string, stream bool) {
	body := map[string]any{
		"model":       "gpt-4o",
		"temperature": 0.5,
		"messages": []map[string]string{
			{"role": "system", "content": "You are terse."},
			{"role": "user", "content": prompt},
		},
	}
	if stream {
		body["stream"] = true
		body["stream_options"] = map[string]bool{"include_usage": true}
	}
	resp, proto := post(body)
	defer resp.Body.Close()
	record := map[string]any{
		"path": "/v1/chat/completions", "model": "gpt-4o", "prompt": prompt, "stream": stream,
		"temperature": 0.5, "status": resp.StatusCode, "tool_calls": []any{}, "proto": proto,
	}
	var text strings.Builder
	var last completion
	var finish *string
	var tokens *usage
	chunks := []completion{}
	if stream {
		lines := bufio.NewScanner(resp.Body)
		lines.Buffer(make([]byte, 1<<16), 1<<24)
		for lines.Scan() {
			line := lines.Text()
			data := strings.TrimPrefix(line, "data: ")
			if data == line || data == "[DONE]" {
				continue
			}
			var chunk completion
			if err := json.Unmarshal([]byte(data), &chunk); err != nil {
				fail("%s: bad stream event %q: %v", name, data, err)
			}
			chunks = append(chunks, chunk)
		}
		if err := lines.Err(); err != nil {
			fail("%s: reading the stream: %v", name, err)
		}
	} else {
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			fail("%s: reading the response: %v", name, err)
		}
		var whole completion
		if err := json.Unmarshal(raw, &whole); err != nil {
			fail("%s: bad response %q: %v", name, raw, err)
		}
		chunks = append(chunks, whole)
	}
	for _, chunk := range chunks {
		last = chunk
		if chunk.Usage != nil {
			tokens = chunk.Usage
		}
		for _, choice := range chunk.Choices {
			text.WriteString(choice.Message.Content + choice.Delta.Content)
			if choice.FinishReason != nil {
				finish = choice.FinishReason
			}
		}
	}
	record["response_id"] = last.ID
	record["response_model"] = last.Model
	record["text"] = text.String()
	record["finish_reason"] = finish
	if tokens != nil {
		record["input_tokens"] = tokens.PromptTokens
		record["output_tokens"] = tokens.CompletionTokens
	}
	emit(name, record)
}

func bigPrompt(minBytes int) string {
	var b strings.Builder
	b.WriteString("big request:")
	for i := 0; b.Len() < minBytes; i++ {
		b.WriteString(" filler" + strconv.Itoa(i))
	}
	return b.String()
}

var scenarios = map[string]func(name string){
	"chat_json":        func(n string) { chat(n, n+": what is the capital of France?", false) },
	"chat_stream":      func(n string) { chat(n, n+": count to five", true) },
	"chat_stream_big":  func(n string) { chat(n, n+": a long answer [big]", true) },
	"chat_big_request": func(n string) { chat(n, bigPrompt(110*1024), false) },
}

func run(name string) {
	if strings.HasPrefix(name, "parallel") {
		count, inner, _ := strings.Cut(strings.TrimPrefix(name, "parallel"), ":")
		n, err := strconv.Atoi(count)
		if err != nil || scenarios[inner] == nil {
			fail("bad scenario %q (parallelN:NAME)", name)
		}
		var start, done sync.WaitGroup
		start.Add(1)
		for i := 0; i < n; i++ {
			done.Add(1)
			go func(i int) {
				defer done.Done()
				start.Wait()
				scenarios[inner](fmt.Sprintf("%s#%d", inner, i))
			}(i)
		}
		start.Done()
		done.Wait()
		return
	}
	scenario := scenarios[name]
	if scenario == nil {
		fail("unknown scenario %q", name)
	}
	scenario(name)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: go-client http1|http2 SCENARIO... | go-client bench ITERATIONS SIZE")
	}
	if os.Args[1] == "bench" {
		bench(os.Args[2:])
		return
	}
	client = newClient(os.Args[1])
	for _, name := range os.Args[2:] {
		run(name)
	}
}
