"""A prototype bank is untrusted input: every malformed bank is refused with one sentence (FewShotError,
exit code 2 in the CLI), before anything large is decompressed and before any wrong mask is written."""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import zipfile

import numpy as np
import pytest
import torch

from napari_fewshot.cli import main
from napari_fewshot.core import SegmentationParams
from napari_fewshot.core import bank_format
from napari_fewshot.core.bank import PrototypeBank
from napari_fewshot.core.encoders import ENCODERS, create_encoder, encoder_spec
from napari_fewshot.core.prototypes import PrototypeSet
from napari_fewshot.errors import FewShotError

C = encoder_spec("efficientnet-lite0").feature_dim  # feature dimension of the default encoder's rows


def make_bank(encoder="efficientnet-lite0", fine_tuned=False) -> PrototypeBank:
    """A valid two-class bank made without any encoder: 3 global + 3 local unit vectors of `encoder`'s width."""
    rng = np.random.default_rng(0)
    dim = encoder_spec(encoder).feature_dim
    vectors = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(6, dim)).astype(np.float32)), dim=1)
    owner = torch.tensor([0, 1, 2, 0, 1, 2])
    is_global = torch.tensor([True, True, True, False, False, False])
    prototypes = PrototypeSet(vectors, owner, is_global, [1, 4], {0: 2, 1: 2, 2: 2})
    state = {"w": torch.ones(3, 2), "n": torch.tensor(0)} if fine_tuned else None
    return PrototypeBank(prototypes, SegmentationParams(encoder=encoder, device="cpu"), encoder, "w:0", dim,
                         {1: "liver", 4: "spleen"}, {1: (1.0, 0.0, 0.0)}, state)


def parts(bank):
    return copy.deepcopy(bank._metadata()), {k: v.copy() for k, v in bank._arrays().items()}


def write(path, meta, arrays, tensors=None):
    """Write a bank file as given (tensors: the metadata's tensor list; by default what the arrays are)."""
    meta = dict(meta)
    meta["tensors"] = tensors if tensors is not None else \
        {name: {"dtype": str(a.dtype), "shape": list(a.shape)} for name, a in arrays.items()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(meta))
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def _meta(change):
    def attack(path, meta, arrays):
        change(meta)
        return write(path, meta, arrays)
    return attack


def _arrays(change):
    def attack(path, meta, arrays):
        change(arrays)
        return write(path, meta, arrays)
    return attack


def _class(key, value, index=0):
    return _meta(lambda m: m["classes"][index].update({key: value}))


def _nan_vectors(arrays):
    arrays["prototypes/vectors"][2, 3] = np.nan


def _global_twice(arrays):
    arrays["prototypes/is_global"][4] = True


def _bomb(path, meta, arrays):
    """A small file whose vectors entry unpacks to 64 MiB (declared (6, 16) float32 in the metadata)."""
    tensors = {n: {"dtype": str(a.dtype), "shape": list(a.shape)} for n, a in arrays.items()}
    write(path, meta, arrays, tensors)
    with zipfile.ZipFile(path) as src:
        entries = {n: src.read(n) for n in src.namelist()}
    entries["prototypes/vectors.npy"] = bytes(64 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _header_lies(path, meta, arrays):
    """The metadata says (6, 16) float32 but the .npy entry holds another shape."""
    tensors = {n: {"dtype": str(a.dtype), "shape": list(a.shape)} for n, a in arrays.items()}
    arrays["prototypes/vectors"] = arrays["prototypes/vectors"][:5]
    return write(path, meta, arrays, tensors)


def _missing_member(path, meta, arrays):
    tensors = {n: {"dtype": str(a.dtype), "shape": list(a.shape)} for n, a in arrays.items()}
    del arrays["prototypes/owner"]
    return write(path, meta, arrays, tensors)


def _huge_metadata(path, meta, arrays):
    meta["sources"] = [{"note": " " * (17 << 20)}]
    return write(path, meta, arrays)


def _truncated(path, meta, arrays):
    write(path, meta, arrays)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_a_zip(path, meta, arrays):
    path.write_bytes(b"\x89HDF\r\n" + bytes(300))
    return path


def _json_nan(path, meta, arrays):
    write(path, meta, arrays)
    with zipfile.ZipFile(path) as src:
        entries = {n: src.read(n) for n in src.namelist()}
    entries["metadata.json"] = entries["metadata.json"].replace(b'"colour": [1.0, 0.0, 0.0, 1.0]',
                                                                b'"colour": [NaN, 0.0, 0.0, 1.0]')
    assert b"NaN" in entries["metadata.json"]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


ATTACKS = {
    "metadata is a list": (lambda p, m, a: write(p, {"format": "x"}, a) and _replace_metadata(p, b"[1, 2]"),
                           "not a napari-fewshot prototype bank"),
    "schema version as text": (_meta(lambda m: m.update(schema_version="1")), "invalid schema version"),
    "schema version true": (_meta(lambda m: m.update(schema_version=True)), "invalid schema version"),
    "feature_dim as text": (_meta(lambda m: m["encoder"].update(feature_dim="16")), "feature_dim"),
    "fine_tuned as text": (_meta(lambda m: m["encoder"].update(fine_tuned="no")), "fine_tuned"),
    "unknown encoder": (_meta(lambda m: (m["encoder"].update(name="resnet-9000"),
                                         m["params"].update(encoder="resnet-9000"))), "resnet-9000"),
    "params name another encoder": (_meta(lambda m: m["params"].update(encoder="efficientnet-lite2")),
                                    "params name the encoder"),
    "duplicate class ids": (_class("id", 4), "repeat"),
    "class id 0": (_class("id", 0), "class id"),
    "class id 1.5": (_class("id", 1.5), "class id"),
    "class id true": (_class("id", True), "class id"),
    "no classes": (_meta(lambda m: m.update(classes=[])), "classes"),
    "class name a number": (_class("name", 12345), "name of class"),
    "colour not numbers": (_class("colour", ["red", 0, 0]), "colour of class"),
    "NaN in the JSON": (_json_nan, "not valid JSON"),
    "input size 100000": (_meta(lambda m: m["params"].update(input_size=100000)), "input_size"),
    "input size as text": (_meta(lambda m: m["params"].update(input_size="big")), "input_size"),
    "scale negative": (_meta(lambda m: m["params"].update(scale=-1.0)), "scale"),
    "unknown support mode": (_meta(lambda m: m["params"].update(support_mode="sideways")), "Support mode"),
    "NaN prototype vectors": (_arrays(_nan_vectors), "NaN"),
    "vectors not unit length": (_arrays(lambda a: a["prototypes/vectors"].__imul__(3)), "unit length"),
    "owner out of range": (_arrays(lambda a: a["prototypes/owner"].__setitem__(5, 7)), "owners"),
    "two globals for a class": (_arrays(_global_twice), "exactly one global"),
    "vectors of another width": (_arrays(lambda a: a.update({"prototypes/vectors": np.ones((6, C + 1), np.float32)})),
                                 "do not fit"),
    "vectors as float64": (_arrays(lambda a: a.update({"prototypes/vectors": a["prototypes/vectors"].astype(np.float64)})),
                           "dtype"),
    "counts disagree": (_meta(lambda m: m["prototypes"]["counts"].update({"1": 5})), "counts"),
    "unexpected entry": (_arrays(lambda a: a.update({"../../evil": np.zeros(1)})), "unexpected entry"),
    "fine-tuned without weights": (_meta(lambda m: m["encoder"].update(fine_tuned=True)), "no encoder weights"),
    "sources not a list": (_meta(lambda m: m.update(sources="everywhere")), "sources"),
    "input std as text": (_meta(lambda m: m["normalization"].update(input_std="wide")), "input_std"),
    "header lies about the shape": (_header_lies, "its metadata says"),
    "missing member": (_missing_member, "prototypes/owner is missing"),
    "zip bomb member": (_bomb, "unpacks to"),
    "huge metadata": (_huge_metadata, "unpacks to"),
    "truncated file": (_truncated, "not a readable prototype bank"),
    "not a zip": (_not_a_zip, "not a readable prototype bank"),
}


def _replace_metadata(path, data):
    with zipfile.ZipFile(path) as src:
        entries = {n: src.read(n) for n in src.namelist()}
    entries["metadata.json"] = data
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return path


def _one_sentence(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message and message.endswith(".") and len(message) < 400, message


def test_the_untouched_bank_loads(tmp_path):
    meta, arrays = parts(make_bank())
    bank = PrototypeBank.load(write(tmp_path / "good.fewshot", meta, arrays))
    assert bank.class_ids == [1, 4] and bank.class_colours == {1: (1.0, 0.0, 0.0, 1.0)}


def _legacy_normalization(meta, mean=(0.485, 0.456, 0.406)):
    """The normalisation record of a bank written before encoders declared their input."""
    meta["normalization"].pop("input_mean", None), meta["normalization"].pop("input_std", None)
    meta["normalization"].update(imagenet_mean=list(mean), imagenet_std=[0.229, 0.224, 0.225])


@pytest.mark.parametrize("encoder", ["efficientnet-lite0", "litemedsam"])
def test_banks_from_before_encoders_declared_their_input_still_load(tmp_path, encoder):
    """Their imagenet_mean / imagenet_std always meant ImageNet's (LiteMedSAM undid it inside its forward)."""
    meta, arrays = parts(make_bank(encoder))
    assert meta["normalization"]["input_std"] == ([0.229, 0.224, 0.225] if encoder != "litemedsam" else [1, 1, 1])
    _legacy_normalization(meta)
    assert PrototypeBank.load(write(tmp_path / "old.fewshot", meta, arrays)).encoder_name == encoder
    _legacy_normalization(meta, mean=(0.5, 0.5, 0.5))
    with pytest.raises(FewShotError, match="another intensity normalisation \\(imagenet_mean"):
        PrototypeBank.load(write(tmp_path / "other.fewshot", meta, arrays))


def test_a_bank_whose_encoder_input_is_not_its_encoders_is_refused(tmp_path):
    meta, arrays = parts(make_bank("litemedsam"))
    meta["normalization"]["input_mean"] = [0.485, 0.456, 0.406]
    with pytest.raises(FewShotError, match="another intensity normalisation \\(input_mean"):
        PrototypeBank.load(write(tmp_path / "bad.fewshot", meta, arrays))


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_malformed_bank_is_one_sentence(tmp_path, attack):
    damage, expected = ATTACKS[attack]
    meta, arrays = parts(make_bank())
    path = damage(tmp_path / "bad.fewshot", meta, arrays)
    with pytest.raises(FewShotError) as info:
        PrototypeBank.load(path)
    message = str(info.value)
    _one_sentence(message)
    assert expected in message, message
    with pytest.raises(FewShotError):
        PrototypeBank.from_bytes(path.read_bytes(), "the bank")  # what batch workers are sent


def test_encoder_weights_with_nan_are_refused(tmp_path):
    meta, arrays = parts(make_bank(fine_tuned=True))
    arrays["encoder/w"][0, 0] = np.nan
    with pytest.raises(FewShotError, match="encoder weights w hold NaN"):
        PrototypeBank.load(write(tmp_path / "nan.fewshot", meta, arrays))


def test_a_bomb_is_refused_without_decompressing_it(tmp_path, monkeypatch):
    """A member whose central directory says 3.7 GB (a 12 MB file unpacking to 8.6 GiB was the attack) is
    refused from its declared size alone: the member is never opened."""
    meta, arrays = parts(make_bank())
    path = write(tmp_path / "bomb.fewshot", meta, arrays)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("prototypes/vectors.npy")
    central = data.find(b"PK\x01\x02")
    while data[central + 46:central + 46 + len(info.filename)] != info.filename.encode():
        central = data.find(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, 4_000_000_000)  # uncompressed size in the central directory
    path.write_bytes(bytes(data))
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(getattr(name, "filename", name))
                        or real_open(self, name, *a, **k))
    with pytest.raises(FewShotError, match="unpacks to 4000000000 bytes") as err:
        PrototypeBank.load(path)
    _one_sentence(str(err.value))
    assert "prototypes/vectors.npy" not in opened


def test_declared_arrays_beyond_the_size_bound_are_refused(tmp_path):
    meta, arrays = parts(make_bank())
    tensors = {n: {"dtype": str(a.dtype), "shape": list(a.shape)} for n, a in arrays.items()}
    tensors["prototypes/vectors"]["shape"] = [10**9, C]
    with pytest.raises(FewShotError, match="would take more than"):
        PrototypeBank.load(write(tmp_path / "big.fewshot", meta, arrays, tensors))


def test_an_encoder_whose_weights_are_missing_says_so_without_downloading(tmp_path, monkeypatch):
    monkeypatch.delenv("NAPARI_FEWSHOT_VGG16_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: pytest.fail("a bank must never download weights"))
    bank = PrototypeBank.load(make_bank("vgg16-panet").save(tmp_path / "vgg.fewshot"))
    with pytest.raises(FewShotError, match="vgg16-panet, whose weights are not installed") as err:
        bank.make_segmenter("cpu")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("attack", ["NaN prototype vectors", "duplicate class ids", "zip bomb member"])
def test_cli_exits_2_with_one_line(tmp_path, capsys, attack):
    damage, expected = ATTACKS[attack]
    meta, arrays = parts(make_bank())
    path = damage(tmp_path / "bad.fewshot", meta, arrays)
    image = tmp_path / "scan.npy"
    np.save(image, np.zeros((3, 40, 40), np.float32))
    assert main(["segment", str(image), "--bank", str(path), "--out", str(tmp_path / "mask.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err, err
    assert not (tmp_path / "mask.npy").exists()


def test_the_format_module_holds_plain_dicts_and_arrays(tmp_path):
    meta, arrays = bank_format.read_bank(make_bank().save(tmp_path / "b.fewshot"))
    assert isinstance(meta, dict) and all(isinstance(a, np.ndarray) for a in arrays.values())
    assert meta["classes"][1] == {"id": 4, "name": "spleen", "colour": None}


def _forged(tmp_path, real="efficientnet-lite2", claimed="efficientnet-lite0", weights_id="w:0"):
    """`real`'s prototypes (and feature_dim) in a bank that says it was made with `claimed` (`weights_id`)."""
    meta, arrays = parts(make_bank(real))
    meta["encoder"]["name"] = meta["params"]["encoder"] = claimed
    meta["encoder"]["weights_id"] = weights_id
    return write(tmp_path / "forged.fewshot", meta, arrays)


def test_a_bank_whose_prototypes_are_another_encoders_is_refused_when_read(tmp_path):
    """lite2's 520-feature prototypes labelled lite0 (472) ended in "unexpected error" once matched."""
    with pytest.raises(FewShotError, match="have 520 features but the encoder efficientnet-lite0 gives 472") as err:
        PrototypeBank.load(_forged(tmp_path))
    _one_sentence(str(err.value))


def test_a_forged_bank_is_exit_2_in_the_cli_before_compute(tmp_path, capsys):
    """With this machine's lite0 weights_id the forged bank passed every check and failed in matching."""
    missing = encoder_spec("efficientnet-lite0").weights_available()
    if missing:
        pytest.skip(missing)
    forged = _forged(tmp_path, weights_id=create_encoder("efficientnet-lite0").weights_id)
    image = tmp_path / "scan.npy"
    np.save(image, np.zeros((3, 40, 40), np.float32))
    out = tmp_path / "mask.npy"
    assert main(["segment", str(image), "--bank", str(forged), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "520 features" in err, err
    assert not out.exists()


def test_a_bank_applied_with_an_encoder_of_another_width_is_refused(tmp_path):
    """Encoders registered without a declared feature_dim are checked when the bank meets the built encoder."""
    bank = make_bank()
    encoder = type("Wider", (), {"name": bank.encoder_name, "weights_id": "w:0", "feature_dim": C + 8})()
    with pytest.raises(FewShotError, match=f"have {C} features but the encoder efficientnet-lite0 gives {C + 8}"):
        bank.check_encoder(encoder)


@pytest.mark.parametrize("name", [n for n, spec in ENCODERS.items() if spec.feature_dim is not None])
def test_each_encoders_declared_feature_dim_is_what_it_builds(name):
    assert create_encoder(name, pretrained=False).feature_dim == encoder_spec(name).feature_dim


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_named_pipe_as_the_bank_is_not_opened(tmp_path):
    fifo = tmp_path / "bank.fewshot"
    os.mkfifo(fifo)
    with pytest.raises(FewShotError, match="is not a regular file"):
        PrototypeBank.load(fifo)
