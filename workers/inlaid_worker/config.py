"""Worker configuration: one frozen dataclass, read once at start-up from the command line (and env
defaults), validated, then passed down. Nothing else in the worker reads the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inlaid_worker.env_switch import EnvSwitchError, check_switches

DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda")
TOOL_CALL_PARSERS = ("hermes", "llama3_json", "mistral", "pythonic")
"""Tool-call parsers the gateway has (apps/gateway/src/openai/tool-calls.ts), by vLLM's --tool-call-parser names.
--tool-call-parser takes one of them or "auto" (engine/tool_template.py reads the format from the chat template)."""
TOOL_CALL_PARSER_CHOICES = ("auto", *TOOL_CALL_PARSERS)
QUANTIZER_STARTS = ("forkserver", "spawn")
"""How re-quantization children start (onboard/quantizer_process.py); never `fork` (gRPC and engine threads)."""
QUANTIZER_START_ENV = "INLAID_QUANTIZER_START"  # the older name of INLAID_WORKER_QUANTIZER_START, still read
ENV_PREFIX = "INLAID_WORKER_"
"""Every flag `--x-y` takes its default from INLAID_WORKER_X_Y (env_name): the prefix is the worker's alone. The
gateway's own worker-link mTLS variables are INLAID_GATEWAY_TLS_CA/_CERT/_KEY (libs/config), so under `npm start`
(one environment for both) INLAID_WORKER_TLS_CERT/_KEY set only this worker's server certificate."""
_ENV_NAME_EXCEPTIONS = {"--worker-id": "INLAID_WORKER_ID"}  # not INLAID_WORKER_WORKER_ID


def env_name(flag: str) -> str:
    """The variable a flag's default comes from: `--kv-cache-bytes` -> INLAID_WORKER_KV_CACHE_BYTES
    (`--worker-id` -> INLAID_WORKER_ID)."""
    return _ENV_NAME_EXCEPTIONS.get(flag, ENV_PREFIX + flag.removeprefix("--").upper().replace("-", "_"))


class ConfigError(ValueError):
    """A worker setting is missing or out of range."""


@dataclass(frozen=True)
class WorkerConfig:
    model: str  # a Hugging Face directory, or "smollm2" for the bundled SmolLM2-135M-Instruct
    adapters_dir: str | None = None  # every subdirectory is a task adapter named by the directory name
    host: str = "127.0.0.1"
    port: int = 50061
    kv_cache_bytes: int = 256 * 1024 * 1024
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    device: str = "cpu"
    dtype: str = "float32"
    worker_id: str = "worker-0"
    max_model_len: int = 0  # 0 = the model's max_position_embeddings (capped by the KV cache)
    metrics_port: int | None = None  # Prometheus /metrics on host:metrics_port; None = off, 0 = any free port
    tls_cert: str | None = None  # PEM server certificate: serve TLS instead of plaintext
    tls_key: str | None = None
    tls_client_ca: str | None = None  # PEM CA: require client certificates it signed (mTLS)
    checkpoint: str | None = None  # GPTQ checkpoint (with stored Hessians) of --model to serve and re-quantize
    checkpoint_store: str | None = None  # where re-quantized versions go (default <checkpoint>-versions)
    prefix_caching: bool = True  # reuse the KV blocks of prompt prefixes already computed (engine/prefix_cache.py)
    grammar_cache_bytes: int = 256 << 20  # structured outputs: compiled grammars kept (LRU by their memory size)
    tool_call_parser: str = "auto"  # tool calls: auto (from the chat template) or one of TOOL_CALL_PARSERS
    quantizer_start: str = "forkserver"  # how re-quantization children start: forkserver or spawn

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("--model is required (a Hugging Face directory or 'smollm2')")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device.split(":")[0] not in DEVICES:
            raise ConfigError(f"--device must be cpu or cuda[:N], got {self.device!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be in 0..65535, got {self.port}")
        for name in ("kv_cache_bytes", "block_size", "max_num_seqs", "max_num_batched_tokens", "grammar_cache_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port must be in 0..65535, got {self.metrics_port}")
        if self.max_model_len < 0:
            raise ConfigError(f"--max-model-len must be >= 0, got {self.max_model_len}")
        if self.checkpoint is not None and not os.path.isfile(os.path.join(self.checkpoint, "config.json")):
            raise ConfigError(f"--checkpoint {self.checkpoint!r} has no config.json")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        if self.tool_call_parser not in TOOL_CALL_PARSER_CHOICES:
            raise ConfigError(
                f"--tool-call-parser must be one of {', '.join(TOOL_CALL_PARSER_CHOICES)}, got {self.tool_call_parser!r}"
            )
        if self.quantizer_start not in QUANTIZER_STARTS:
            raise ConfigError(
                f"--quantizer-start ({QUANTIZER_START_ENV}) must be one of {', '.join(QUANTIZER_STARTS)}, "
                f"got {self.quantizer_start!r}"
            )
        if self.adapters_dir is not None and not os.path.isdir(self.adapters_dir):
            raise ConfigError(f"--adapters-dir {self.adapters_dir!r} is not a directory")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    def default(flag: str, fallback: str | None) -> str | None:
        return env.get(env_name(flag), fallback)

    p = argparse.ArgumentParser(prog="python -m inlaid_worker.server", description="Inlaid worker (gRPC)")
    p.add_argument("--model", default=default("--model", "smollm2"))
    p.add_argument("--adapters-dir", default=default("--adapters-dir", None))
    p.add_argument("--host", default=default("--host", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(default("--port", "50061") or 50061))
    p.add_argument("--kv-cache-bytes", type=int, default=int(default("--kv-cache-bytes", str(256 << 20)) or 0))
    p.add_argument("--block-size", type=int, default=int(default("--block-size", "16") or 16))
    p.add_argument("--max-num-seqs", type=int, default=int(default("--max-num-seqs", "64") or 64))
    p.add_argument("--max-num-batched-tokens", type=int, default=int(default("--max-num-batched-tokens", "2048") or 2048))
    p.add_argument("--max-model-len", type=int, default=int(default("--max-model-len", "0") or 0))
    p.add_argument("--device", default=default("--device", "cpu"))
    p.add_argument("--dtype", default=default("--dtype", "float32"))
    p.add_argument("--worker-id", default=default("--worker-id", "worker-0"))
    metrics_port = default("--metrics-port", None)
    p.add_argument("--metrics-port", type=int, default=None if not metrics_port else int(metrics_port))
    p.add_argument("--checkpoint", default=default("--checkpoint", None))
    p.add_argument("--checkpoint-store", default=default("--checkpoint-store", None))
    p.add_argument("--tls-cert", default=default("--tls-cert", None))
    p.add_argument("--tls-key", default=default("--tls-key", None))
    p.add_argument("--tls-client-ca", default=default("--tls-client-ca", None))
    p.add_argument(
        "--prefix-caching",
        metavar="on|off",
        default=default("--prefix-caching", "on"),
        help="reuse the KV of shared prompt prefixes (default on)",
    )
    p.add_argument(
        "--grammar-cache-bytes",
        type=int,
        default=int(default("--grammar-cache-bytes", str(256 << 20)) or 0),
        help="bytes of compiled grammars (structured outputs) kept, least recently used dropped first",
    )
    p.add_argument(
        "--tool-call-parser",
        choices=TOOL_CALL_PARSER_CHOICES,
        default=default("--tool-call-parser", "auto"),
        help="format of the model's tool calls; auto: read from the chat template (hermes when it has no tool support)",
    )
    p.add_argument(
        "--quantizer-start",
        choices=QUANTIZER_STARTS,
        type=lambda v: v.strip().lower() or "forkserver",
        default=default("--quantizer-start", env.get(QUANTIZER_START_ENV)) or "forkserver",
        help="how re-quantization children start: forkserver (preloads torch once per worker) or spawn",
    )
    return p


def flag_env_names() -> dict[str, str]:
    """Every flag (as `--help` lists it) and the variable its default comes from."""
    actions = _parser({})._actions  # argparse has no public list of its options
    return {a.option_strings[-1]: env_name(a.option_strings[-1]) for a in actions if a.dest != "help"}


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> WorkerConfig:
    """Parses the command line; the `INLAID_WORKER_<FLAG>` variables (env_name) give the defaults. The on/off switches
    of env_switch.SWITCHES are checked here too (a typo: ConfigError naming the variable)."""
    try:
        check_switches(os.environ if env is None else env)
    except EnvSwitchError as exc:
        raise ConfigError(str(exc)) from exc
    ns = _parser(os.environ if env is None else env).parse_args(argv)
    return WorkerConfig(
        model=ns.model,
        adapters_dir=ns.adapters_dir,
        host=ns.host,
        port=ns.port,
        kv_cache_bytes=ns.kv_cache_bytes,
        block_size=ns.block_size,
        max_num_seqs=ns.max_num_seqs,
        max_num_batched_tokens=ns.max_num_batched_tokens,
        device=ns.device,
        dtype=ns.dtype,
        worker_id=ns.worker_id,
        max_model_len=ns.max_model_len,
        metrics_port=ns.metrics_port,
        checkpoint=ns.checkpoint,
        checkpoint_store=ns.checkpoint_store,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        tls_client_ca=ns.tls_client_ca,
        prefix_caching=_on_off("--prefix-caching", ns.prefix_caching),
        grammar_cache_bytes=ns.grammar_cache_bytes,
        tool_call_parser=ns.tool_call_parser,
        quantizer_start=ns.quantizer_start,
    )


def _on_off(flag: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("on", "1", "true", "yes"):
        return True
    if v in ("off", "0", "false", "no"):
        return False
    raise ConfigError(f"{flag} must be on or off, got {value!r}")


def check_gpu_env() -> None:
    """The worker's valued GPU settings (INLAID_PDL, INLAID_PDL_MAX_BUCKET, INLAID_DECODE_FUSION,
    INLAID_GRAPH_INPUT, INLAID_PREFILL_GRAPH_MAX_TOKENS) parsed at start, as the on/off switches are in load_config: a bad value is a
    ConfigError naming the variable (exit 2) instead of a traceback when the runner is built. Also the on/off
    INLAID_DECODE_DN2 (decode_graphs.dn2_env: parsed beside the policy it edits, not in env_switch.SWITCHES). Late
    imports: these parsers live beside the kernels and graphs that read them."""
    from inlaid_worker.kernels import pdl
    from inlaid_worker.model import decode_graphs, prefill_graphs

    try:
        pdl.env_mode()
        decode_graphs.pdl_policy_env()
        decode_graphs.fusion_env()
        decode_graphs.dn2_env()
        decode_graphs.graph_input_env()
        prefill_graphs.env_max_tokens()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
