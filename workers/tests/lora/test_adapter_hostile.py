"""Hostile adapter files are refused with AdapterError (never another exception type), here and over gRPC."""

import json
import os
import shutil

import grpc
import pytest
import torch
from adapter_edits import base_with_adapter
from grpc_worker import serving
from inlaid_worker.gen.inlaid.v1 import worker_pb2
from inlaid_worker.lora.adapter import AdapterError, load_adapter
from inlaid_worker.quant.adapter import load_task_adapter
from safetensors.torch import load_file, save_file

TARGETS = ["q_proj"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return base_with_adapter(tmp_path_factory.mktemp("hostile"), TARGETS)


def _pickle_renamed(d):
    (d / "adapter_model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, d / "adapter_model.safetensors")


def _garbage(d):
    (d / "adapter_model.safetensors").write_bytes(b"\xff" * 8 + b"junk")


def _truncated(d):
    p = d / "adapter_model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])


def _retyped(dtype):
    def change(d):
        p = d / "adapter_model.safetensors"
        save_file({k: (v * 100).to(dtype) for k, v in load_file(p).items()}, p)

    return change


def _config(text: bytes):
    def change(d):
        (d / "adapter_config.json").write_bytes(text)

    return change


def _config_change(**change):
    def apply(d):
        cfg = json.loads((d / "adapter_config.json").read_text())
        cfg.update(change)
        (d / "adapter_config.json").write_text(json.dumps(cfg))

    return apply


def _weights_link_outside(d):
    """adapter_model.safetensors a symlink to a good weights file outside the adapter directory."""
    outside = d.parent / f"{d.name}-outside.safetensors"
    (d / "adapter_model.safetensors").rename(outside)
    (d / "adapter_model.safetensors").symlink_to(outside)


def _config_link_to_etc(d):
    (d / "adapter_config.json").unlink()
    (d / "adapter_config.json").symlink_to("/etc/passwd")


def _dangling_weights_link(d):
    (d / "adapter_model.safetensors").unlink()
    (d / "adapter_model.safetensors").symlink_to(d / "gone.safetensors")


def _duplicate_key(d):
    """Both `...lora_A.weight` and `...lora_A.default.weight` for layer 0 q_proj (the second one zeros)."""
    p = d / "adapter_model.safetensors"
    tensors = load_file(p)
    name = next(k for k in tensors if ".layers.0." in k and "lora_A" in k)
    tensors[name.replace("lora_A.weight", "lora_A.default.weight")] = torch.zeros_like(tensors[name])
    save_file(tensors, p)


HOSTILE = {
    "alpha_zero": (_config_change(lora_alpha=0), "lora_alpha must be a finite number > 0, got 0"),
    "alpha_negative": (_config_change(lora_alpha=-16), "lora_alpha must be a finite number > 0, got -16"),
    "alpha_tiny_negative": (_config_change(lora_alpha=-1e-300), "finite number > 0"),
    "weights_link_outside": (_weights_link_outside, "adapter_model.safetensors is a symlink to .*outside the adapter"),
    "config_link_to_etc": (_config_link_to_etc, "adapter_config.json is a symlink to /etc/passwd, outside"),
    "dangling_weights_link": (_dangling_weights_link, "adapter_model.safetensors"),
    "huge_config": (
        _config(b'{"r": 4, "target_modules": ["q_proj"], "x": "' + b"a" * (1 << 20) + b'"}'),
        "larger than",
    ),
    "duplicate_key": (
        _duplicate_key,
        r"tensors '[^']*\.layers\.0\.self_attn\.q_proj\.lora_A(\.default)?\.weight' and "
        r"'[^']*\.layers\.0\.self_attn\.q_proj\.lora_A(\.default)?\.weight' are both lora_A of layer 0 q_proj",
    ),
    "pickle_renamed": (_pickle_renamed, "is not a safetensors file"),
    "garbage": (_garbage, "is not a safetensors file"),
    "truncated": (_truncated, "is not a safetensors file"),
    "bool_tensors": (_retyped(torch.bool), "has dtype bool"),
    "int_tensors": (_retyped(torch.int32), "has dtype int32"),
    "bad_utf8_config": (_config(b'{"r": 4, "x": "\xff\xfe", "target_modules": ["q_proj"]}'), "UnicodeDecodeError"),
    "deep_config": (
        _config(b'{"x":' + b"[" * 100000 + b"]" * 100000 + b', "r": 4, "target_modules": ["q_proj"]}'),
        "RecursionError",
    ),
    "alpha_400_digits": (
        _config(b'{"r": 4, "lora_alpha": ' + b"9" * 400 + b', "target_modules": ["q_proj"]}'),
        "lora_alpha must be a finite number",
    ),
    "alpha_nan": (_config(b'{"r": 4, "lora_alpha": NaN, "target_modules": ["q_proj"]}'), "finite"),
    "alpha_infinity": (_config(b'{"r": 4, "lora_alpha": -Infinity, "target_modules": ["q_proj"]}'), "finite"),
    "targets_unhashable": (_config_change(target_modules=[{"a": 1}]), "list of names"),
    "layers_bool": (_config_change(layers_to_transform=[True]), "layers_to_transform"),
    "rslora_string": (_config_change(use_rslora="false"), "use_rslora must be true or false"),
}


@pytest.mark.parametrize("how", sorted(HOSTILE))
def test_hostile_adapter_is_refused_with_adapter_error(base, tmp_path, how):
    model_dir, adapter_dir, config = base
    change, message = HOSTILE[how]
    d = tmp_path / how
    shutil.copytree(adapter_dir, d)
    change(d)
    with pytest.raises(AdapterError, match=message):
        load_adapter(d, config)
    with pytest.raises(AdapterError, match=f"task 'tk': .*{message}"):  # the onboarding path keeps the type
        load_task_adapter(d, model_dir, "tk")


def test_good_adapter_still_loads(base):
    _, adapter_dir, config = base
    assert load_adapter(adapter_dir, config).scale == 2.0


def test_symlink_inside_the_adapter_directory_is_read(base, tmp_path):
    """Only links that leave the directory are refused: a weights file linked from a subfolder of it loads."""
    _, adapter_dir, config = base
    d = tmp_path / "inner-link"
    shutil.copytree(adapter_dir, d)
    (d / "blobs").mkdir()
    (d / "adapter_model.safetensors").rename(d / "blobs" / "w.safetensors")
    (d / "adapter_model.safetensors").symlink_to("blobs/w.safetensors")
    assert load_adapter(d, config).scale == 2.0


def _hub_snapshot(adapter_dir, cache):
    """The adapter laid out as the Hugging Face hub cache writes it: `<repo>/blobs/<sha>` holds each file and
    `<repo>/snapshots/<rev>/<name>` links to `../../blobs/<sha>`. Returns the snapshot directory."""
    repo = cache / "models--org--adapter"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for i, name in enumerate(("adapter_config.json", "adapter_model.safetensors")):
        sha = f"{i:02d}" + "ab" * 19
        shutil.copyfile(adapter_dir / name, repo / "blobs" / sha)
        (snap / name).symlink_to(f"../../blobs/{sha}")
    return snap


def test_a_hugging_face_cache_snapshot_loads_from_its_blobs(base, tmp_path):
    """A hub cache snapshot's files link to `../../blobs/<sha>`, outside the snapshot directory: read as they are."""
    _, adapter_dir, config = base
    snap = _hub_snapshot(adapter_dir, tmp_path / "hub")
    assert (snap / "adapter_model.safetensors").is_symlink()
    assert load_adapter(snap, config).scale == 2.0
    # the same files linked the same way from a directory that is not `<repo>/snapshots/<rev>` stay refused
    other = snap.parent.parent / "not-snapshots" / "0123abcd"
    other.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (other / name).symlink_to(os.readlink(snap / name))
    with pytest.raises(AdapterError, match="adapter_config.json is a symlink to .*outside the adapter directory"):
        load_adapter(other, config)


def _hub_subfolder(adapter_dir, cache, sub):
    """The adapter in a subfolder `sub` of a hub cache snapshot (a repo holding several adapters):
    `<repo>/snapshots/<rev>/<sub>/<name>` links to `../../../blobs/<sha>` (one `..` more per level)."""
    repo = cache / "models--org--adapters"
    (repo / "blobs").mkdir(parents=True)
    d = repo / "snapshots" / "0123abcd" / sub
    d.mkdir(parents=True)
    up = "../" * (2 + len(sub.split("/")))
    for i, name in enumerate(("adapter_config.json", "adapter_model.safetensors")):
        sha = f"{i:02d}" + "cd" * 19
        shutil.copyfile(adapter_dir / name, repo / "blobs" / sha)
        (d / name).symlink_to(f"{up}blobs/{sha}")
    return d


@pytest.mark.parametrize("sub", ["task-a", "tasks/task-b", "snapshots/step-100"])  # the last: a repo folder named snapshots
def test_an_adapter_in_a_subfolder_of_a_hub_snapshot_loads(base, tmp_path, sub):
    _, adapter_dir, config = base
    d = _hub_subfolder(adapter_dir, tmp_path / "hub", sub)
    assert load_adapter(d, config).scale == 2.0
    # from a link to the subfolder too (the resolved directory decides)
    (tmp_path / "link").symlink_to(d)
    assert load_adapter(tmp_path / "link", config).scale == 2.0


def test_a_hub_snapshot_subfolder_whose_blobs_is_a_symlink_is_refused(base, tmp_path):
    _, adapter_dir, config = base
    d = _hub_subfolder(adapter_dir, tmp_path / "hub", "task-a")
    _blobs_a_symlink_elsewhere(d.parent, tmp_path)
    with pytest.raises(AdapterError, match="adapter_config.json is a symlink to .*, outside the adapter directory"):
        load_adapter(d, config)


def _escape_via_dotdot(snap, tmp_path):
    """A link that names blobs but climbs out of it with `..` to a file beside the cache."""
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes((snap / "adapter_model.safetensors").read_bytes())
    (snap / "adapter_model.safetensors").unlink()
    (snap / "adapter_model.safetensors").symlink_to("../../blobs/../../../outside.safetensors")


def _into_repo_not_blobs(snap, tmp_path):
    """A link to a file of the repo directory that is not in blobs (refs/main)."""
    (snap / "adapter_config.json").unlink()
    (snap / "adapter_config.json").symlink_to("../../refs/main")


def _into_a_blobs_subfolder(snap, tmp_path):
    """A link to a file in a folder under blobs (the hub keeps blobs flat)."""
    blobs = snap.parent.parent / "blobs"
    (blobs / "sub").mkdir()
    (blobs / "sub" / "w").write_bytes((snap / "adapter_model.safetensors").read_bytes())
    (snap / "adapter_model.safetensors").unlink()
    (snap / "adapter_model.safetensors").symlink_to("../../blobs/sub/w")


def _blobs_a_symlink_elsewhere(snap, tmp_path):
    """`<repo>/blobs` itself a link to another directory (e.g. /etc): not the hub's layout, refused."""
    repo = snap.parent.parent
    (repo / "blobs").rename(repo / "real-blobs")
    elsewhere = tmp_path / "elsewhere"
    (repo / "real-blobs").rename(elsewhere)
    (repo / "blobs").symlink_to(elsewhere)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (_escape_via_dotdot, "adapter_model.safetensors"),
        (_into_repo_not_blobs, "adapter_config.json"),
        (_into_a_blobs_subfolder, "adapter_model.safetensors"),
        (_blobs_a_symlink_elsewhere, "adapter_config.json"),
    ],
)
def test_hub_snapshot_links_outside_blobs_are_refused(base, tmp_path, change, name):
    _, adapter_dir, config = base
    snap = _hub_snapshot(adapter_dir, tmp_path / "hub")
    change(snap, tmp_path)
    with pytest.raises(AdapterError, match=f"{name} is a symlink to .*, outside the adapter directory"):
        load_adapter(snap, config)


@pytest.mark.parametrize("name", ["adapter_config.json", "adapter_model.safetensors"])
def test_a_link_swapped_after_its_check_is_not_followed(base, tmp_path, monkeypatch, name):
    """The file read is the one checked: a link inside the directory that is re-pointed outside it between the check
    and the open (a check/open race) is not followed, since the resolved path is opened, not the link again."""
    from inlaid_worker.lora import adapter as adapter_mod

    _, adapter_dir, config = base
    d = tmp_path / "swapped"
    shutil.copytree(adapter_dir, d)
    (d / "blobs").mkdir()
    (d / name).rename(d / "blobs" / name)
    (d / name).symlink_to(f"blobs/{name}")
    outside = tmp_path / f"outside-{name}"
    outside.write_bytes(b"not what was checked")  # read instead, it fails as bad JSON / not safetensors
    real_contained = adapter_mod._contained

    def check_then_swap(root, file):
        checked = real_contained(root, file)
        if file.name == name:  # the attacker re-points the link once it was checked
            file.unlink()
            file.symlink_to(outside)
        return checked

    monkeypatch.setattr(adapter_mod, "_contained", check_then_swap)
    assert load_adapter(d, config).scale == 2.0


RPC_HOSTILE = (
    "pickle_renamed",
    "alpha_nan",
    "bad_utf8_config",
    "alpha_negative",
    "config_link_to_etc",
    "duplicate_key",
)


def test_load_adapter_rpc_refuses_hostile_files_as_invalid_argument(base, tmp_path):
    model_dir, adapter_dir, _ = base
    with serving(model_dir, kv_cache_bytes=4 << 20) as (stub, _running):
        for how in RPC_HOSTILE:
            d = tmp_path / how
            shutil.copytree(adapter_dir, d)
            HOSTILE[how][0](d)
            with pytest.raises(grpc.RpcError) as err:
                stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name=f"x-{how}", path=str(d)))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (how, err.value.details())
        card = stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name="good", path=str(adapter_dir)))
        assert card.id == "good"


def test_worker_starts_past_a_hostile_adapter_in_adapters_dir(base, tmp_path):
    model_dir, adapter_dir, _ = base
    adapters = tmp_path / "adapters"
    shutil.copytree(adapter_dir, adapters / "good")
    shutil.copytree(adapter_dir, adapters / "bad")
    _pickle_renamed(adapters / "bad")
    with serving(model_dir, kv_cache_bytes=4 << 20, adapters_dir=str(adapters)) as (stub, _running):
        ids = [m.id for m in stub.GetInfo(worker_pb2.InfoRequest()).models]
    assert "good" in ids and "bad" not in ids
