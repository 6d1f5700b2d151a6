# serve-app image for the RayService (deployments/kuberay). CPU only.
# The tag must match `rayVersion` in deployments/kuberay/rayservice.base.yaml and the
# ray[serve] pin in pyproject.toml (tests/deploy checks all three).
FROM rayproject/ray:2.60.0-py311

# The base image's non-root user (uid 1000, group users), who owns its Python environment
# and /home/ray. Everything below, and the container, runs as this user.
USER ray
# src: the build tree (pip builds in place); serve-app: the app's state folder, `home` in
# the rendered serveConfigV2.
RUN mkdir -p /home/ray/src /home/ray/serve-app
WORKDIR /home/ray/src

COPY --chown=ray:users pyproject.toml ./
COPY --chown=ray:users serve_app/ ./serve_app/
COPY --chown=ray:users configs/ ./configs/

# Dependencies are pinned in pyproject.toml; ray[serve]==2.60.0 is already in the image.
RUN pip install --no-cache-dir . && rm -rf build

WORKDIR /home/ray
