# Quazzar Mesh. The two set-up commands are `make up` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help up down status test bench build release proto deps

help:
	@echo "make up      run the whole system (NATS, PostgreSQL, every service, two demo nodes)"
	@echo "make down    stop everything make up started"
	@echo "make status  show what make up runs"
	@echo "make test    install what is missing, build, and run every test"
	@echo "make bench   run the benchmarks and print their figures"

deps:
	@scripts/deps.sh

build: deps
	swift build --build-tests

release: deps
	swift build -c release

proto:
	proto/generate.sh

up:
	@scripts/up.sh

down:
	@scripts/down.sh

status:
	@scripts/status.sh

test:
	@scripts/test.sh

bench:
	@scripts/bench.sh
