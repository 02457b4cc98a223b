//! How long the syntax stage takes on big Dockerfiles, and whether that time grows linearly.
//!
//! The Dockerfiles are generated in memory from a block of two stages that uses every
//! common construct: global and stage ARGs, FROM with a platform and a name, ENV and LABEL in
//! both forms, comments, RUN with mounts and continuation lines, COPY with flags, heredocs
//! for RUN and COPY, EXPOSE, HEALTHCHECK and exec-form CMD. The block is repeated, with
//! numbered names, until the file has the wanted number of lines.
//!
//! Run with `cargo bench --bench parse`; the figures are recorded in README.md.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

/// One block: [`BLOCK_LINES`] lines, two stages.
fn block(index: usize, out: &mut String) {
    let port = 8000 + index % 1000;
    out.push_str(&format!(
        r#"# Stage pair {index}: build, then a small runtime image.
ARG GO_VERSION_{index}=1.22
FROM --platform=$BUILDPLATFORM golang:${{GO_VERSION_{index}}} AS build{index}
ENV GOPATH=/go PATH="/go/bin:$PATH" CGO_ENABLED=0
ENV LEGACY_{index} a value with spaces
LABEL org.opencontainers.image.title="app {index}" org.opencontainers.image.version=$GO_VERSION_{index}
WORKDIR /src/app{index}
COPY --link go.mod go.sum ./
# Download modules with a cache mount, then build.
RUN --mount=type=cache,target=/root/.cache/go-build,sharing=locked \
    --mount=type=bind,source=.,target=/src/app{index},rw \
    --network=default \
    go mod download && \
    # comments may sit inside a continuation
    go build -trimpath -ldflags "-s -w" -o /out/app{index} ./cmd/app && \
    strip /out/app{index}
RUN <<EOF
set -eu
echo "built {index}" > /out/stamp
EOF

FROM alpine:3.20 AS run{index}
ARG USER_ID={index}
COPY --from=build{index} --chown=$USER_ID:0 --chmod=0755 /out/app{index} /usr/local/bin/app
COPY <<config.json <<-motd /etc/app/
{{"id": {index}, "port": {port}}}
config.json
	welcome to app {index}
	motd
USER $USER_ID
SHELL ["/bin/sh", "-eu", "-c"]
EXPOSE {port}/tcp
VOLUME ["/data/{index}"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["wget", "-q", "-O-", "http://localhost:{port}/health"]
ENTRYPOINT ["/usr/local/bin/app"]
CMD ["--port", "{port}"]
ONBUILD COPY . /src

"#
    ));
}

/// Lines in one [`block`].
const BLOCK_LINES: usize = 40;

/// Instructions in one [`block`].
const BLOCK_INSTRUCTIONS: usize = 22;

/// A Dockerfile of about `lines` lines (a whole number of blocks).
fn dockerfile(lines: usize) -> String {
    let mut out = String::with_capacity(lines * 48);
    for index in 0..lines.div_ceil(BLOCK_LINES) {
        block(index, &mut out);
    }
    out
}

/// Parse time excludes freeing the result, which is dropped after each timed run: the tree
/// is handed to the next stage, and `kiln parse` exits without freeing it. `parse_with_drop` shows what
/// freeing adds; `parse_raw` shows the share of the lossless layer.
fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (lines, samples) in [(10_000, 50), (100_000, 20), (1_000_000, 10)] {
        let text = dockerfile(lines);
        let parsed = kiln::syntax::parse(text.as_bytes()).expect("the generated file parses");
        assert_eq!(text.lines().count(), lines, "block size");
        assert_eq!(
            parsed.instructions.len(),
            lines / BLOCK_LINES * BLOCK_INSTRUCTIONS
        );
        group.sample_size(samples);
        group.throughput(Throughput::Elements(lines as u64));
        group.bench_with_input(BenchmarkId::from_parameter(lines), &text, |b, text| {
            b.iter_batched(
                || (),
                |()| kiln::syntax::parse(text.as_bytes()).expect("parses"),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    let text = dockerfile(100_000);
    let mut group = c.benchmark_group("parse_with_drop");
    group.sample_size(20);
    group.throughput(Throughput::Elements(100_000));
    group.bench_with_input(BenchmarkId::from_parameter(100_000), &text, |b, text| {
        b.iter(|| kiln::syntax::parse(text.as_bytes()).expect("parses"))
    });
    group.finish();

    let mut group = c.benchmark_group("parse_raw");
    group.sample_size(20);
    group.throughput(Throughput::Elements(100_000));
    group.bench_with_input(BenchmarkId::from_parameter(100_000), &text, |b, text| {
        b.iter_batched(
            || (),
            |()| kiln::syntax::parse_raw(text.as_bytes()).expect("parses"),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
