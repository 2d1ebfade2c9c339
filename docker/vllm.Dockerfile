# vLLM in its own environment (vLLM pins torch and FastAPI), for the two GPU sampling backends.
#   docker build -f docker/vllm.Dockerfile -t qrpo-vllm .
# sampler=vllm: the pipeline starts qrpo/sampling/vllm_worker.py with this image's python; mount the repository,
# the artifact root and /tmp (the worker's exchange folder) at the same paths as on the host:
#   qrpo-pipeline sampler=vllm sampler.vllm_python="docker run --rm --gpus all --ipc=host -v $PWD:$PWD -v $QRPO_HOME:$QRPO_HOME -v /tmp:/tmp qrpo-vllm python3"
# sampler=openai: an OpenAI-compatible server
#   docker run --gpus all -p 8000:8000 -v $HF_HOME:/root/.cache/huggingface qrpo-vllm vllm serve allenai/Llama-3.1-Tulu-3-8B-SFT
ARG VLLM_TAG=latest
FROM vllm/vllm-openai:${VLLM_TAG}
COPY qrpo/sampling/vllm_worker.py /opt/qrpo/vllm_worker.py
ENTRYPOINT []
CMD ["python3", "-c", "import vllm; print(vllm.__version__)"]
