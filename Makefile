# Shortcuts for the commands the README and CI use.
.PHONY: fmt lint test test-root bench e2e purity image

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets --locked -- -D warnings

purity:
	scripts/check-core-purity.sh

test:
	cargo test --workspace --locked

test-root:
	sudo .ci/run

bench:
	cargo bench -p hostnic-core --features testing --bench allocator
	cargo bench -p hostnic-qingcloud --bench cloud
	cargo bench -p hostnic --bench startup
	sudo scripts/bench-datapath.sh

e2e:
	sudo .ci/run

# The node image with podman (no registry needed); IMAGE=… to name it.
image:
	sudo scripts/build-image.sh
