# A CPU image that serves a transferlab model over HTTP (upload page, REST API, /docs).
#
#   docker build -t transferlab-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/demo/model:/model:ro" transferlab-serve
#   open http://127.0.0.1:8000/
#
# /model is a bundle folder (model.json + model.safetensors, optionally model.onnx from
# 'transferlab export ... --out runs/demo/model/model.onnx', which saves the export at
# start-up). Arguments after the image name replace the default CMD, e.g.
#   docker run ... transferlab-serve --backend torch --max-batch 8
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1

# CPU-only PyTorch wheels: the default ones bundle CUDA libraries a CPU image never uses.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX" torch torchvision

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --create-home --uid 10001 transferlab

USER transferlab
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"

# Inside the container 0.0.0.0 is needed for -p to reach the server; publish the port
# on the host's loopback (-p 127.0.0.1:8000:8000) unless it should be reachable.
ENTRYPOINT ["transferlab", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--backend", "onnx"]
