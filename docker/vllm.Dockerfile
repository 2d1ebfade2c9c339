# vLLM sampling server for GPU workers (its own environment: vLLM pins torch and FastAPI).
#   docker build -f docker/vllm.Dockerfile -t qrpo-vllm .
#   docker run --gpus all -p 8000:8000 -v $HF_HOME:/root/.cache/huggingface qrpo-vllm --model allenai/Llama-3.1-Tulu-3-8B-SFT
ARG VLLM_TAG=latest
FROM vllm/vllm-openai:${VLLM_TAG}
ENTRYPOINT ["vllm", "serve"]
