"""WorkerConfig: defaults, env defaults, validation messages."""

import pytest
from inlaid_worker.config import ConfigError, load_config


def test_flags_override_env_defaults() -> None:
    env = {"INLAID_WORKER_PORT": "6000", "INLAID_WORKER_DTYPE": "bfloat16"}
    cfg = load_config(["--model", "smollm2", "--block-size", "32"], env)
    assert (cfg.port, cfg.dtype, cfg.block_size, cfg.host) == (6000, "bfloat16", 32, "127.0.0.1")
    assert load_config(["--port", "7"], env).port == 7


def test_metrics_port_flag_and_env_reach_the_config() -> None:
    assert load_config(["--metrics-port", "9100"], {}).metrics_port == 9100
    assert load_config([], {"INLAID_WORKER_METRICS_PORT": "9101"}).metrics_port == 9101
    assert load_config([], {}).metrics_port is None


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--dtype", "int3"], "--dtype must be one of"),
        (["--device", "tpu"], "--device must be cpu or cuda"),
        (["--kv-cache-bytes", "0"], "--kv-cache-bytes must be positive"),
        (["--adapters-dir", "/does/not/exist"], "is not a directory"),
        (["--port", "70000"], "--port must be in"),
    ],
)
def test_invalid_settings_are_refused_clearly(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(argv, {})


def test_quantizer_start_is_forkserver_unless_set_and_read_once_from_flag_or_env() -> None:
    assert load_config([], {}).quantizer_start == "forkserver"
    assert load_config(["--quantizer-start", "spawn"], {}).quantizer_start == "spawn"
    assert load_config([], {"INLAID_QUANTIZER_START": " Spawn "}).quantizer_start == "spawn"
    assert load_config([], {"INLAID_QUANTIZER_START": ""}).quantizer_start == "forkserver"
    assert load_config([], {"INLAID_WORKER_QUANTIZER_START": "spawn"}).quantizer_start == "spawn"
    flag_wins = load_config(["--quantizer-start", "forkserver"], {"INLAID_QUANTIZER_START": "spawn"})
    assert flag_wins.quantizer_start == "forkserver"


def test_a_bad_quantizer_start_fails_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"--quantizer-start \(INLAID_QUANTIZER_START\) must be one of forkserver, spawn"):
        load_config([], {"INLAID_QUANTIZER_START": "fork"})
    with pytest.raises(SystemExit):  # argparse refuses a bad flag value (exit code 2, usage on stderr)
        load_config(["--quantizer-start", "fork"], {})
