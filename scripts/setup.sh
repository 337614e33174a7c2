#!/usr/bin/env bash
# Installs what a fresh machine with only the Rust toolchain lacks:
# the wasm32-wasip2 target and `just`. Safe to run again.
set -euo pipefail

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
echo "setup: $(rustc --version), wasm32-wasip2 target, $(just --version)" >&2
