# Developer shortcuts. `just` is optional: every recipe is a plain command.

# Run the gateway on its embedded defaults.
run:
    cargo run --release -- serve

# The whole test suite (starts private PostgreSQL, Redis and NATS if none runs on localhost).
test:
    cargo test --workspace

# What CI runs.
ci:
    bash .ci/run

# Plugin micro-benchmark: verify + map through WASM against native Rust.
bench:
    cargo bench -p hookgate --bench plugin

# Load benchmark: see BENCHMARKS.md.
bench-load:
    cargo run --release -p hookgate-load -- --mode all

# The same load from wrk in a process of its own (apt-get install wrk).
bench-load-wrk:
    cargo run --release -p hookgate-load -- --mode all --driver wrk

# The venv of the seed's Python stack, the baseline of issue 3's floor (bench/seed).
bench-seed-setup:
    python3 -m venv target/seed-venv && target/seed-venv/bin/pip install -r bench/seed/requirements.txt

# Ceiling, seed stack, embedded and production in one run, with ratios to the seed.
bench-load-floor: bench-seed-setup
    cargo run --release -p hookgate-load -- --mode floor

# Ten minutes at 1000 webhooks/s while a private NATS server is killed twice (BENCHMARKS.md).
bench-load-soak:
    cargo run --release -p hookgate-load -- --mode soak --minutes 10

# One fuzz target for a minute (nightly and cargo-fuzz: see fuzz/README.md).
fuzz target="route":
    cd fuzz && cargo +nightly fuzz run {{target}} -s none -- -max_total_time=60

# Write the bundled plugins as .wasm files into ./plugins.d.
export-plugins:
    cargo run --release -- plugins export plugins.d
