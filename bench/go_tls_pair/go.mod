module observer-bench/go-tls-pair

go 1.18
