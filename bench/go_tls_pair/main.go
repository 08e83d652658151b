// A Go crypto/tls client and server over loopback, in separate processes, carrying no LLM
// traffic: the host-tax benchmark's Go workload (bench/host_tax.py). Standard library only.
//
//	go_tls_pair server CERT KEY           prints "listening PORT", echoes every message back
//	go_tls_pair client PORT SECONDS SIZE  request/response round trips of SIZE bytes on one
//	                                      connection for SECONDS; prints one JSON line
package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func server(certFile, keyFile string) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		fail("load certificate: %v", err)
	}
	listener, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Printf("listening %d\n", listener.Addr().(*net.TCPAddr).Port)
	for {
		conn, err := listener.Accept()
		if err != nil {
			fail("accept: %v", err)
		}
		go echo(conn)
	}
}

// echo answers each message of the client's size (its first 4 bytes, big-endian) with as many
// bytes.
func echo(conn net.Conn) {
	defer conn.Close()
	var head [4]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return
	}
	size := int(head[0])<<24 | int(head[1])<<16 | int(head[2])<<8 | int(head[3])
	buf := make([]byte, size)
	for {
		if _, err := io.ReadFull(conn, buf); err != nil {
			return
		}
		if _, err := conn.Write(buf); err != nil {
			return
		}
	}
}

func client(port string, seconds float64, size int) {
	conn, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		fail("dial: %v", err)
	}
	defer conn.Close()
	head := []byte{byte(size >> 24), byte(size >> 16), byte(size >> 8), byte(size)}
	if _, err := conn.Write(head); err != nil {
		fail("write: %v", err)
	}
	request := make([]byte, size)
	for i := range request {
		request[i] = byte('a' + i%26)
	}
	reply := make([]byte, size)
	start := time.Now()
	deadline := start.Add(time.Duration(seconds * float64(time.Second)))
	n := 0
	for {
		if _, err := conn.Write(request); err != nil {
			fail("write: %v", err)
		}
		if _, err := io.ReadFull(conn, reply); err != nil {
			fail("read: %v", err)
		}
		n++
		if n%16 == 0 && time.Now().After(deadline) {
			break
		}
	}
	elapsed := time.Since(start).Seconds()
	out, _ := json.Marshal(map[string]interface{}{
		"round_trips": n, "seconds": elapsed, "bytes": size, "round_trips_per_s": float64(n) / elapsed,
	})
	fmt.Println(string(out))
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "server" {
		server(os.Args[2], os.Args[3])
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "client" {
		seconds, err1 := strconv.ParseFloat(os.Args[3], 64)
		size, err2 := strconv.Atoi(os.Args[4])
		if err1 != nil || err2 != nil || size <= 0 {
			fail("bad client arguments %q", os.Args[2:])
		}
		client(os.Args[2], seconds, size)
		return
	}
	fail("usage: go_tls_pair server CERT KEY | go_tls_pair client PORT SECONDS SIZE")
}
