"""Image probes (ckptlens.extract.images) on tiny ViT / CLIP vision models built offline and saved
with ``save_pretrained`` (so under the names transformers 5 saves, not the ones it builds):
activations equal a direct forward's hidden states (all tokens, class token, patch tokens), the
gradients of an image classifier equal autograd of its own loss, preprocessing follows the model's
preprocessor_config.json, and a probe that does not fit the model is one error naming the key and file."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_np

transformers = pytest.importorskip("transformers")
from ckptlens.extract.hf_model import ExtractionError, load_hf_model, model_kind  # noqa: E402
from ckptlens.extract.images import image_batches, modality_error, read_images  # noqa: E402
from ckptlens.extract.model import extract_model  # noqa: E402
from ckptlens.store.tensors import TensorFile  # noqa: E402

IMG, P, D = 16, 4, 32
T = (IMG // P) ** 2 + 1


def _vit(tmp_path, cls="ViTForImageClassification", seed=0):
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(
        hidden_size=D,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=IMG,
        patch_size=P,
        num_labels=3,
    )
    cfg._attn_implementation = "eager"
    model = getattr(transformers, cls)(cfg).eval()
    folder = tmp_path / cls
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture
def probe_images(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(10, IMG, IMG, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, size=10)
    np.save(tmp_path / "images.npy", imgs)
    np.save(tmp_path / "labels.npy", labels)
    return tmp_path / "images.npy", tmp_path / "labels.npy", imgs, labels


def _pixels(imgs):
    return torch.from_numpy(((imgs.astype(np.float32) / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())


@pytest.mark.parametrize("tokens", ["all", "cls", "patches"])
def test_vit_classifier_activations_and_gradients(tmp_path, probe_images, tokens):
    model, folder = _vit(tmp_path)
    images, labels_path, imgs, labels = probe_images
    keys = [k for k in load_np(str(folder / "model.safetensors"))]
    assert "vit.encoder.layer.0.attention.attention.query.weight" in keys  # the saved names
    cfg = json.loads((folder / "config.json").read_text())
    assert model_kind(cfg, keys) == "image_classification"
    probe = {
        "images": str(images),
        "labels": str(labels_path),
        "batch_size": 4,
        "n_batches": 2,
        "seed": 0,
        "image_tokens": tokens,
    }
    targets = {
        "activations": ["vit.encoder.layer.*", "classifier"],
        "gradients": ["vit.encoder.layer.*.attention.attention.query", "classifier"],
        "attentions": ["vit.encoder.layer.*.attention"],
    }
    outs = {k: str(tmp_path / f"{k}.safetensors") for k in ("activations", "gradients", "attentions")}
    extract_model(folder, targets, probe, outs, device="cpu")
    acts = load_np(outs["activations"])
    batches = image_batches(probe, cfg)
    b0 = batches[0]
    idx = [
        int(np.flatnonzero((_pixels(imgs) == b0["pixel_values"][i]).all(dim=(1, 2, 3)).numpy())[0]) for i in range(4)
    ]
    assert (b0["labels"].numpy() == labels[idx]).all()
    with torch.no_grad():
        ref = model(pixel_values=_pixels(imgs[idx]), output_hidden_states=True, output_attentions=True)
    h = ref.hidden_states[2]  # after block 1: [4, T, d]
    want = {"all": h.reshape(-1, D), "cls": h[:, 0], "patches": h[:, 1:].reshape(-1, D)}[tokens]
    np.testing.assert_allclose(acts["vit.encoder.layer.1"], want.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts["classifier"], ref.logits.numpy(), rtol=1e-5, atol=1e-5)
    att = load_np(outs["attentions"])["vit.encoder.layer.0.attention"]
    pa = ref.attentions[0].permute(0, 2, 1, 3)  # [b, q, h, k]
    want_att = {"all": pa.reshape(-1, 4, T), "cls": pa[:, 0], "patches": pa[:, 1:].reshape(-1, 4, T)}[tokens]
    np.testing.assert_allclose(att, want_att.numpy(), rtol=1e-5, atol=1e-6)
    grads = TensorFile(outs["gradients"], group_gradients=True)
    for i, b in enumerate(batches):
        loss = model(pixel_values=b["pixel_values"], labels=b["labels"]).loss
        w = [model.vit.layers[0].attention.q_proj.weight, model.classifier.weight]
        gq, gc = torch.autograd.grad(loss, w)
        np.testing.assert_allclose(
            grads["vit.encoder.layer.0.attention.attention.query"][i], gq.numpy(), rtol=1e-4, atol=1e-7
        )
        np.testing.assert_allclose(grads["classifier"][i], gc.numpy(), rtol=1e-4, atol=1e-7)


def test_vit_base_model_loads_from_its_saved_names(tmp_path, probe_images):
    """The ViTModel gap: saved ``encoder.layer.N.attention.attention.query``, built ``layers.N.attention.q_proj``."""
    model, folder = _vit(tmp_path, "ViTModel", seed=1)
    built, names, kind = load_hf_model(folder)
    assert kind == "base"
    for k, v in model.state_dict().items():
        torch.testing.assert_close(built.state_dict()[k], v)
    assert names["encoder.layer.0.attention"] == "layers.0.attention"
    assert names["encoder.layer.1"] == "layers.1"
    assert names["encoder.layer.0.attention.attention.query"] == "layers.0.attention.q_proj"
    images, *_ = probe_images
    probe = {"images": str(images), "batch_size": 4, "n_batches": 1}
    out = tmp_path / "a.safetensors"
    extract_model(folder, {"activations": ["encoder.layer.*"]}, probe, {"activations": str(out)}, device="cpu")
    assert load_np(str(out))["encoder.layer.1"].shape == (4 * T, D)
    with pytest.raises(ExtractionError, match="no task head"):  # a headless ViT has no loss
        extract_model(
            folder, {"gradients": ["**"]}, probe, {"gradients": str(tmp_path / "g.safetensors")}, device="cpu"
        )


def test_preprocessor_config_resizes_and_normalises(tmp_path):
    model, folder = _vit(tmp_path)
    transformers.ViTImageProcessor(
        size={"height": IMG, "width": IMG}, image_mean=[0.2, 0.3, 0.4], image_std=[0.5, 0.6, 0.7]
    ).save_pretrained(folder)
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = (digits.images[:6] * 16).clip(0, 255).astype(np.uint8)  # [6, 8, 8]: one channel
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    np.save(tmp_path / "d.npy", rgb)
    probe = {"images": str(tmp_path / "d.npy"), "preprocessor": str(folder), "batch_size": 6, "n_batches": 1}
    pv = image_batches(probe, json.loads((folder / "config.json").read_text()))[0]["pixel_values"]
    assert pv.shape == (6, 3, IMG, IMG)
    proc = transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    want = proc(list(rgb), return_tensors="pt")["pixel_values"]
    assert torch.allclose(torch.sort(pv.flatten())[0], torch.sort(want.flatten())[0], atol=1e-6)
    # grey 8×8 images without a preprocessor: the channel count, then the size, named with the file
    np.save(tmp_path / "g.npy", grey)
    cfg = json.loads((folder / "config.json").read_text())
    with pytest.raises(ExtractionError, match=r"probe.images .*g.npy: images with 1 channel\(s\), the model takes 3"):
        image_batches({"images": str(tmp_path / "g.npy")}, cfg)
    with pytest.raises(ExtractionError, match=r"probe.images .*d.npy: 8×8 images, the model takes 16×16"):
        image_batches({"images": str(tmp_path / "d.npy")}, cfg)


def test_image_folder_with_class_subfolders(tmp_path):
    from PIL import Image

    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((IMG, IMG, 3), 40 * c + i, np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    arr, labels = read_images(tmp_path / "imgs")
    assert arr.shape == (4, IMG, IMG, 3) and list(labels) == [0, 0, 1, 1]
    assert read_images(tmp_path / "imgs", {"dog": 0, "cat": 1})[1].tolist() == [1, 1, 0, 0]


def test_probe_kind_must_fit_the_model(tmp_path, probe_images):
    images, *_ = probe_images
    _, vit = _vit(tmp_path)
    np.save(tmp_path / "ids.npy", np.zeros((4, 5), np.int64))
    with pytest.raises(
        ExtractionError, match=r"probe.tokens .*ids.npy: .* is a 'vit' vision model, which reads images"
    ):
        extract_model(
            vit,
            {"activations": ["**"]},
            {"tokens": str(tmp_path / "ids.npy")},
            {"activations": str(tmp_path / "a.safetensors")},
            device="cpu",
        )
    bert = transformers.BertModel(
        transformers.BertConfig(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=30
        )
    )
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(ExtractionError, match=r"probe.images .*images.npy: .* is a 'bert' model, which reads tokens"):
        extract_model(
            tmp_path / "bert",
            {"activations": ["**"]},
            {"images": str(images)},
            {"activations": str(tmp_path / "a.safetensors")},
            device="cpu",
        )
    assert "runs.r.probe.images" in modality_error({"images": "x.npy"}, "bert", "runs.r.probe")
    assert "runs.r.probe.text" in modality_error({"text": "p.txt"}, "open_clip", "runs.r.probe")
    assert (
        modality_error({"images": "x.npy"}, "clip", "p") is None and modality_error({"images": "x"}, "generic") is None
    )


def test_clip_vision_tower_of_a_full_clip(tmp_path, probe_images):
    vision = dict(
        hidden_size=D, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=IMG, patch_size=P
    )
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    model = transformers.CLIPModel(
        transformers.CLIPConfig(vision_config=vision, text_config=text, projection_dim=8)
    ).eval()
    model.save_pretrained(tmp_path / "clip")
    images, _, imgs, _ = probe_images
    probe = {
        "images": str(images),
        "batch_size": 10,
        "n_batches": 1,
        "image_tokens": "cls",
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    out = tmp_path / "a.safetensors"
    extract_model(
        tmp_path / "clip",
        {"activations": ["vision_model.encoder.layers.*"]},
        probe,
        {"activations": str(out)},
        device="cpu",
    )
    acts = load_np(str(out))
    pv = image_batches(probe, json.loads((tmp_path / "clip" / "config.json").read_text()))[0]["pixel_values"]
    with torch.no_grad():
        h = model.vision_model(pixel_values=pv, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(acts["vision_model.encoder.layers.1"], h[2][:, 0].numpy(), rtol=1e-5, atol=1e-5)
