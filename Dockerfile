# The SDK worker image for remote Beam runners (Dataflow, Flink, Spark): Beam's own Python SDK image with
# shopllm and its dependencies installed, so workers import the same code as the driver.
#   docker build -t REGISTRY/shopllm-worker:0.1.0 .
#   shopllm nightly ... --runner=DataflowRunner --sdk_container_image=REGISTRY/shopllm-worker:0.1.0 ...
# Keep the Beam version equal to the driver's (`pip show apache-beam`).
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

WORKDIR /opt/shopllm
COPY pyproject.toml README.md ./
COPY shopllm ./shopllm
COPY pipelines ./pipelines
COPY jobs ./jobs
# The CPU build of torch: score workers without GPUs need no CUDA libraries (use a CUDA base for GPU workers).
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir .
