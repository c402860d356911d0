# The bot's image: `docker build -t imagine-bot .`, then see compose.yaml or docs/hosting.md.
# Two stages: the builder installs the locked dependencies (with their hashes) and the bot into
# a virtual environment; the runtime stage copies only that environment, without pip's cache
# or the build tools.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
# The lock first: the dependency layer is rebuilt only when the lock changes, not at every edit.
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r /tmp/requirements.lock
COPY pyproject.toml README.md LICENSE /src/
COPY bot /src/bot
COPY cogs /src/cogs
# --no-deps: every dependency comes from the lock above, never resolved again here. pip and
# setuptools are not needed to run the bot: they go, and stay out of the runtime stage.
RUN /opt/venv/bin/pip install --no-deps /src \
    && /opt/venv/bin/python -m pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
# `docker run --env-file` and compose's env_file replace these: .env.example leaves DATA_DIR
# and METRICS_PORT unset for that reason (compose.yaml sets both again over .env).
# MPLCONFIGDIR: matplotlib (/usage's chart) keeps its font list there; without a writable one
# it would rebuild the list in a temporary directory at every start.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/data \
    METRICS_PORT=9100 \
    MPLCONFIGDIR=/var/cache/matplotlib
# A user of its own, without a login shell or a home; it owns only DATA_DIR and the font list.
RUN groupadd --system --gid 10001 imagine \
    && useradd --system --uid 10001 --gid imagine --no-create-home --shell /usr/sbin/nologin imagine \
    && mkdir /data /var/cache/matplotlib \
    && chown imagine:imagine /data /var/cache/matplotlib
COPY --from=builder /opt/venv /opt/venv
# The bot reads .env from its working directory; here the settings come from the environment
# (compose's env_file, `docker run --env-file`), and /app holds nothing else.
WORKDIR /app
USER 10001:10001
# The font list, built once here as the bot's user rather than at each start of a container.
RUN python -c "import matplotlib.font_manager"
# Declared after the chown, so a new volume starts out owned by the bot's user.
VOLUME ["/data"]
EXPOSE 9100
# `python -m bot health` asks the bot's own /healthz on $METRICS_PORT and exits 1 unless the
# gateway is connected and the database and the limit store answer (or when METRICS_PORT is
# unset: no metrics server). It waits up to 10 s for the answer, plus Python's start.
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
    CMD ["python", "-m", "bot", "health"]
# SIGTERM (docker stop's signal) makes the bot drain its requests for SHUTDOWN_GRACE_SECONDS;
# give `docker stop` more time than that (`--time`, or compose's stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
