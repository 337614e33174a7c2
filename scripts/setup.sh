#!/usr/bin/env bash
# Installs what a fresh machine with only the Rust toolchain lacks:
# the wasm32-wasip2 target, `just`, libclang (RocksDB's bindings are
# generated with it), OpenSSL's and libcurl's headers (librdkafka's TLS and
# OIDC), Java and Maven if absent, iproute2 if absent, and Apache Kafka for
# the tests (through Maven). Safe to run again.
set -euo pipefail

# libclang itself (libclang.so.1, libclang-14.so.1), not LLVM's C++ library
# libclang-cpp.so.14, which some images carry without it and bindgen
# cannot use.
have_libclang() {
    ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
        /usr/lib/*-linux-gnu/libclang.so* /usr/lib/*-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1 ||
        [ -n "${LIBCLANG_PATH:-}" ]
}
if ! have_libclang; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq && $sudo apt-get install -y -qq libclang-dev >/dev/null
    else
        echo "setup: install libclang (e.g. libclang-dev) for RocksDB's bindings" >&2
        exit 1
    fi
fi

# librdkafka is built with OpenSSL (TLS and SASL to Kafka) and libcurl
# (OAUTHBEARER tokens from an OpenID Connect provider): their headers,
# found through pkg-config; the openssl tool makes the secured test
# broker's certificates.
if ! pkg-config --exists openssl libcurl 2>/dev/null || ! command -v openssl >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq &&
            $sudo apt-get install -y -qq libssl-dev libcurl4-openssl-dev pkg-config openssl >/dev/null
    else
        echo "setup: install OpenSSL's and libcurl's headers and the openssl tool (e.g. libssl-dev, libcurl4-openssl-dev, pkg-config, openssl)" >&2
        exit 1
    fi
fi

rustup target add wasm32-wasip2 >/dev/null

if ! command -v just >/dev/null 2>&1; then
    # A prebuilt `just` from PyPI takes seconds; building it takes minutes.
    if command -v pip3 >/dev/null 2>&1 && pip3 install --quiet rust-just 2>/dev/null; then
        hash -r
        command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
    fi
    if ! command -v just >/dev/null 2>&1; then
        cargo install just --locked --quiet
    fi
fi
# Apache Kafka, which the tests run against, needs Java 17+ and Maven.
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] || ! command -v mvn >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq && $sudo apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
    else
        echo "setup: install Java 17 or newer and Maven (Apache Kafka runs in the tests)" >&2
        exit 1
    fi
fi
# The network-partition test puts the broker and daemons in network
# namespaces (`ip netns`, veth pairs, a bridge): iproute2, and root.
if ! command -v ip >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq && $sudo apt-get install -y -qq iproute2 >/dev/null
    else
        echo "setup: install iproute2 (the ip command) for the network-partition test" >&2
        exit 1
    fi
fi
"$(dirname "$0")/../tests/kafka/kafka.sh" --fetch
echo "setup: $(rustc --version), wasm32-wasip2 target, $(just --version), libclang, Java $(java_major), Maven" >&2
