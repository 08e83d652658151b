module observer-e2e/go-client

go 1.18
