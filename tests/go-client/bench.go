package main

// `go-client bench ITERATIONS SIZE`: an in-process TLS echo over loopback (crypto/tls on both
// ends, a throwaway self-signed certificate), timed per round trip. Each round trip is four
// crypto/tls calls: the client's Write and Read, the server's Read and Write. Prints one JSON
// line (not a call record: it has no "call" key).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"os"
	"strconv"
	"time"
)

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		fail("generating a key: %v", err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		fail("creating a certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func echo(conn net.Conn, size int) {
	defer conn.Close()
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

func bench(args []string) {
	if len(args) != 2 {
		fail("usage: go-client bench ITERATIONS SIZE")
	}
	iterations, err1 := strconv.Atoi(args[0])
	size, err2 := strconv.Atoi(args[1])
	if err1 != nil || err2 != nil || iterations <= 0 || size <= 0 {
		fail("bench: ITERATIONS and SIZE are positive integers")
	}
	listener, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned()}})
	if err != nil {
		fail("listening: %v", err)
	}
	go func() {
		conn, err := listener.Accept()
		if err == nil {
			echo(conn, size)
		}
	}()
	conn, err := tls.Dial("tcp", listener.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		fail("dialing: %v", err)
	}
	out, in := make([]byte, size), make([]byte, size)
	roundTrip := func() {
		if _, err := conn.Write(out); err != nil {
			fail("write: %v", err)
		}
		if _, err := io.ReadFull(conn, in); err != nil {
			fail("read: %v", err)
		}
	}
	for i := 0; i < iterations/10+1; i++ {
		roundTrip()
	}
	start := time.Now()
	for i := 0; i < iterations; i++ {
		roundTrip()
	}
	elapsed := time.Since(start)
	conn.Close()
	line, _ := json.Marshal(map[string]any{
		"bench": "go_tls_echo", "iterations": iterations, "size": size,
		"ns_per_round_trip": elapsed.Nanoseconds() / int64(iterations),
	})
	os.Stdout.Write(append(line, '\n'))
}
