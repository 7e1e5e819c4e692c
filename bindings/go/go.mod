module github.com/loratune/loratune/bindings/go

go 1.19
