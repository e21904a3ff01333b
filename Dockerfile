# sqc: compile a question-answering model to an artifact, then serve it from a slim image.
#
#   docker build -t sqc-qa .                                   # the bundled MiniLM model, AVX2
#   docker build -t sqc-qa --build-arg SQC_TARGET=avx512 .     # for an AVX-512 (VNNI) fleet
#   docker build -t sqc-qa --build-arg MODEL_DIR=models/mine --build-arg BUCKETS=128,384 .
#       (a folder in the build context with model.onnx and its tokenizer.json)
#   docker run -p 5543:5543 sqc-qa                             # POST /predict, GET /v2/health/ready
#
# See docs/deploy.md: several workers sharing one mapped weights file, replicas on Kubernetes.

ARG PYTHON=3.11

# ---------------------------------------------------------------- stage 1: compile the artifact
FROM python:${PYTHON}-slim AS build
# gcc builds the generated C (cffi); the python image already has Python.h.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY compiler compiler
COPY runtime runtime
COPY templates templates
COPY sqc sqc
RUN pip install --no-cache-dir . \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .
ARG MODEL_DIR=examples/models/minilm-l6-qa
ARG BUCKETS=128,384
ARG BATCH_SIZE=32
# The instruction set of the generated code. avx2 runs on any x86-64 server of the last decade;
# avx512 (with VNNI) is faster where every node has it. An artifact loaded on a CPU without
# what it was built for is refused with a message, never run.
ARG SQC_TARGET=avx2
# model.onnx and the tokenizer.json beside it (sqc compile bundles it into the artifact)
COPY ${MODEL_DIR} /model
RUN sqc compile /model/model.onnx --buckets "${BUCKETS}" --batch-size "${BATCH_SIZE}" \
        --target "${SQC_TARGET}" -o /artifact \
    && sqc inspect /artifact | tail -n 3

# ---------------------------------------------------------------- stage 2: the runtime image
FROM python:${PYTHON}-slim AS runtime
# The built library needs libgomp (OpenMP) and libm at run time, not gcc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
# sqc without its compiler's dependencies (onnx, onnx-graphsurgeon, jinja2 are for compiling):
# the runtime, the CLI and the server need these.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/sqc-*.whl \
    && pip install --no-cache-dir "numpy>=1.24" "cffi>=1.16" "tokenizers>=0.15" "typer>=0.12" \
        "rich>=13" "pyyaml>=6" "flask>=3" "waitress>=3" "prometheus-client>=0.20" \
        "gunicorn>=22" \
    && rm -rf /wheels
COPY --from=build /artifact /artifact
RUN useradd --system --no-create-home sqc
USER sqc
ENV SQC_CACHE_DIR=/tmp/sqc-cache \
    PYTHONUNBUFFERED=1
EXPOSE 5543
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5543/v2/health/ready', timeout=2)"
# One process, micro-batching, waitress threads; SIGTERM drains the requests in flight.
# For several processes sharing the mapped weights, see docs/deploy.md (gunicorn).
CMD ["sqc", "serve", "/artifact", "--host", "0.0.0.0", "--port", "5543"]
