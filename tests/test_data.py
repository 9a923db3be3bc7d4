"""Tests of flexhinm.data: loading the real files, augmentation, normalisation and batch loaders."""

from __future__ import annotations

import functools
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from flexhinm.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    ImageDataset,
    RandomCropFlip,
    data_roots,
    default_cache_dir,
    default_padding,
    list_datasets,
    load_dataset,
    make_loader,
    make_loaders,
    normalize,
    random_crop_flip,
)

SIZES = {
    ("cifar10", "train"): (10_000, (3, 32, 32), 10),
    ("cifar10", "test"): (3_000, (3, 32, 32), 10),
    ("imagenette", "train"): (500, (3, 160, 160), 10),
    ("imagenette", "val"): (250, (3, 160, 160), 10),
    ("imagenet-sample", "all"): (1_000, (3, 64, 64), 1000),
}


@functools.lru_cache(maxsize=None)
def _cached(name: str, split: str, root: str) -> ImageDataset:
    """Load each real split once per test session."""
    return load_dataset(name, split, root=root)


def _small_dataset(count: int = 24, size: int = 8) -> ImageDataset:
    """Images whose pixels encode their index, with labels ``index % 3``."""
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1)
    images = images.expand(count, 3, size, size)
    return ImageDataset(
        images.contiguous(),
        torch.arange(count) % 3,
        ["a", "b", "c"],
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )


def _isolate_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path, Path]:
    """Point every data root at an empty temporary folder and return (root, env, cache)."""
    root, env, cache = tmp_path / "root", tmp_path / "env", tmp_path / "cache"
    monkeypatch.setenv("FLEXHINM_DATA", str(env))
    monkeypatch.setenv("FLEXHINM_CACHE_DIR", str(cache))
    return root, env, cache


def _write_cifar_batches(
    folder: Path, per_batch: int = 3, numpy1_names: bool = False
) -> np.ndarray:
    """Write a tiny torchvision-format CIFAR-10 folder and return its training rows (n, 3072).

    With ``numpy1_names`` the pickles name ``numpy.core`` as numpy 1.x wrote it.
    """
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle, protocol=2)

    rows = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(label) for label in rng.integers(0, 10, size=per_batch)]
        content = pickle.dumps({"data": data, "labels": labels}, protocol=2)
        if numpy1_names:
            content = content.replace(b"numpy._core.", b"numpy.core.")
        (folder / name).write_bytes(content)
        if name != "test_batch":
            rows.append(data)
    return np.concatenate(rows)


# Real files


@pytest.mark.parametrize(("name", "split"), list(SIZES))
def test_load_dataset_shapes_and_dtypes(data_root: Path, name: str, split: str) -> None:
    """Every split loads as uint8 NCHW images and int64 labels of the documented sizes."""
    data = _cached(name, split, str(data_root))
    count, image_size, num_classes = SIZES[(name, split)]

    assert len(data) == count
    assert data.images.shape == (count, *image_size)
    assert data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64
    assert data.num_classes == num_classes
    assert data.source == "npz"
    assert data.split == split


@pytest.mark.parametrize(("name", "split"), list(SIZES))
def test_load_dataset_label_range(data_root: Path, name: str, split: str) -> None:
    """Labels lie in [0, num_classes) and every class has the same count."""
    data = _cached(name, split, str(data_root))
    counts = torch.bincount(data.labels, minlength=data.num_classes)

    assert int(data.labels.min()) == 0
    assert int(data.labels.max()) == data.num_classes - 1
    assert int(counts.min()) == int(counts.max()), f"class counts {counts.tolist()}"


@pytest.mark.parametrize(("name", "split"), [key for key in SIZES if key[0] != "imagenet-sample"])
def test_load_dataset_prefix_balance(data_root: Path, name: str, split: str) -> None:
    """A 100-image prefix contains every class, and 1000 images are roughly balanced."""
    data = _cached(name, split, str(data_root))

    assert set(data.head(100).labels.tolist()) == set(range(10))
    if len(data) >= 1000:
        counts = torch.bincount(data.head(1000).labels, minlength=10)
        assert int(counts.min()) >= 50, f"counts {counts.tolist()}"
        assert int(counts.max()) <= 150, f"counts {counts.tolist()}"


def test_load_dataset_cifar_classes(data_root: Path) -> None:
    """CIFAR-10 class names come in the official order."""
    data = _cached("cifar10", "train", str(data_root))
    assert data.classes[:3] == ["airplane", "automobile", "bird"]
    assert data.classes[-1] == "truck"


def test_load_dataset_imagenette_test_alias(data_root: Path) -> None:
    """Split "test" of Imagenette loads the "val" file."""
    data = load_dataset("imagenette", "test", root=data_root)
    assert data.split == "val"
    assert len(data) == 250
    assert data.wnids[0] == "n01440764"


def test_load_dataset_sample_labels(data_root: Path) -> None:
    """The ImageNet sample contains labels 0..999 in order."""
    data = _cached("imagenet-sample", "all", str(data_root))
    assert torch.equal(data.labels, torch.arange(1000))


def test_load_dataset_env_root(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root=, the data is found through FLEXHINM_DATA."""
    monkeypatch.setenv("FLEXHINM_DATA", str(data_root))
    data = load_dataset("cifar10", "test")
    assert data.path == data_root / "cifar10" / "test.npz"


def test_loader_normalised_statistics(data_root: Path) -> None:
    """Normalised CIFAR-10 training images have per-channel mean near 0 and std near 1."""
    data = _cached("cifar10", "train", str(data_root))
    loader = make_loader(data, 500, train=False)
    x = torch.cat([batch for batch, _ in loader])
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))

    assert float(mean.abs().max()) < 0.05, f"channel means {mean.tolist()}"
    assert float((std - 1).abs().max()) < 0.05, f"channel stds {std.tolist()}"


def test_loader_real_epoch(data_root: Path) -> None:
    """An augmented epoch over the CIFAR-10 subset yields len(loader) full batches."""
    data = _cached("cifar10", "train", str(data_root))
    loader = make_loader(data, 128, train=True, seed=1)
    batches = list(loader)

    assert len(batches) == len(loader) == 10_000 // 128
    assert all(x.shape == (128, 3, 32, 32) for x, _ in batches)
    assert all(x.dtype == torch.float32 for x, _ in batches)
    assert all(y.dtype == torch.int64 for _, y in batches)


def test_make_loaders_cifar(data_root: Path) -> None:
    """make_loaders returns a shuffled train loader and an ordered test loader."""
    train, test = make_loaders("cifar10", 64, eval_batch_size=100, root=data_root,
                               train_limit=640, eval_limit=300)
    assert len(train) == 10
    assert len(test) == 3
    assert train.train and not test.train
    assert test.augment is None


def test_loader_real_no_augment(data_root: Path) -> None:
    """Without augmentation, the first test batch is the normalised first images."""
    data = _cached("cifar10", "test", str(data_root))
    x, y = next(iter(make_loader(data, 100, train=False)))

    assert torch.equal(x, normalize(data.images[:100], CIFAR10_MEAN, CIFAR10_STD))
    assert torch.equal(y, data.labels[:100])


def test_make_loaders_imagenette(data_root: Path) -> None:
    """Imagenette loaders pair train with val and yield 160 px batches."""
    train, evaluation = make_loaders("imagenette", 32, root=data_root)
    x, y = next(iter(train))

    assert evaluation.dataset.split == "val"
    assert len(train) == 500 // 32
    assert len(evaluation) == 8
    assert x.shape == (32, 3, 160, 160)
    assert y.dtype == torch.int64


# Missing data and bad names


def test_load_dataset_missing_names_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing data set raises FileNotFoundError that lists every path tried."""
    root, env, cache = _isolate_roots(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("cifar10", "train", root=root)
    message = str(error.value)

    for base in (root, env, cache):
        assert str(base / "cifar10" / "train.npz") in message
        assert str(base / "cifar10" / "cifar-10-batches-py") in message
        assert str(base / "cifar-10-batches-py") in message
    assert "download=True" in message
    assert "FLEXHINM_DATA" in message


def test_load_dataset_missing_env_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The message states that FLEXHINM_DATA is not set and how to get Imagenette."""
    _isolate_roots(monkeypatch, tmp_path)
    monkeypatch.delenv("FLEXHINM_DATA")
    with pytest.raises(FileNotFoundError, match="FLEXHINM_DATA is not set") as error:
        load_dataset("imagenette", "train")
    assert str(tmp_path / "cache" / "imagenet-subset" / "imagenette_train.npz") in str(error.value)
    assert "not downloaded automatically" in str(error.value)


def test_load_dataset_unknown_name() -> None:
    """An unknown data set name raises ValueError listing the valid names."""
    with pytest.raises(ValueError, match=r"unknown data set name='mnist'.*'cifar10'"):
        load_dataset("mnist", "train")


def test_load_dataset_unknown_split() -> None:
    """An unknown split raises ValueError listing the valid splits."""
    with pytest.raises(ValueError, match=r"unknown split='val'.*\['train', 'test'\]"):
        load_dataset("cifar10", "val")


def test_load_dataset_download_imagenette(tmp_path: Path) -> None:
    """download=True is rejected for data sets other than CIFAR-10."""
    with pytest.raises(ValueError, match="download=True is supported only for 'cifar10'"):
        load_dataset("imagenette", "train", root=tmp_path, download=True)


def test_load_dataset_bad_root_type() -> None:
    """A root that is not a path raises TypeError."""
    with pytest.raises(TypeError, match="root must be a folder path"):
        load_dataset("cifar10", "train", root=3)


def test_load_dataset_corrupt_npz(tmp_path: Path) -> None:
    """A file that is not an .npz archive raises ValueError naming the file."""
    path = tmp_path / "cifar10" / "test.npz"
    path.parent.mkdir()
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="is not a readable .npz archive"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_load_dataset_npz_missing_key(tmp_path: Path) -> None:
    """An archive without the labels array raises ValueError naming the missing key."""
    path = tmp_path / "cifar10" / "test.npz"
    path.parent.mkdir()
    np.savez(path, images=np.zeros((2, 32, 32, 3), np.uint8), classes=np.array(["a"]))
    with pytest.raises(ValueError, match=r"lacks the arrays \['labels'\]"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_data_roots_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Roots are searched as root argument, FLEXHINM_DATA, then the cache."""
    root, env, cache = _isolate_roots(monkeypatch, tmp_path)
    roots = data_roots(root)
    assert [entry.path for entry in roots] == [root, env, cache]
    assert [entry.origin for entry in roots] == ["root argument", "FLEXHINM_DATA", "user cache"]


def test_default_cache_dir_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without FLEXHINM_CACHE_DIR the cache lives under XDG_CACHE_HOME."""
    monkeypatch.delenv("FLEXHINM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "flexhinm" / "data"


def test_list_datasets_splits() -> None:
    """list_datasets names the three data sets and their canonical splits."""
    assert list_datasets() == {
        "cifar10": ["train", "test"],
        "imagenette": ["train", "val"],
        "imagenet-sample": ["all"],
    }


# Full CIFAR-10 in torchvision's format


def test_cifar_batches_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cifar-10-batches-py folder is read with rows mapped to RGB planes."""
    root, _, _ = _isolate_roots(monkeypatch, tmp_path)
    rows = _write_cifar_batches(root / "cifar10" / "cifar-10-batches-py")
    data = load_dataset("cifar10", "train", root=root)

    assert data.source == "cifar-10-batches-py"
    assert len(data) == 15
    assert data.classes[0] == "class0"
    assert int(data.images[0, 0, 0, 1]) == int(rows[0, 1])
    assert int(data.images[0, 1, 0, 0]) == int(rows[0, 1024])
    assert int(data.images[0, 2, 31, 31]) == int(rows[0, 3071])
    assert len(load_dataset("cifar10", "test", root=root)) == 3


def test_cifar_batches_numpy1_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches pickled under numpy 1.x module names load without warnings."""
    root, _, _ = _isolate_roots(monkeypatch, tmp_path)
    rows = _write_cifar_batches(root / "cifar-10-batches-py", numpy1_names=True)
    assert b"numpy.core.multiarray" in (root / "cifar-10-batches-py" / "data_batch_1").read_bytes()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_dataset("cifar10", "train", root=root)
    assert torch.equal(data.images.reshape(15, -1), torch.from_numpy(rows))


def test_cifar_batches_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In one root, full CIFAR-10 wins over the .npz subset."""
    root, _, _ = _isolate_roots(monkeypatch, tmp_path)
    (root / "cifar10").mkdir(parents=True)
    np.savez(root / "cifar10" / "test.npz", images=np.zeros((2, 32, 32, 3), np.uint8),
             labels=np.zeros(2, np.int64), classes=np.array(["a"]))
    _write_cifar_batches(root / "cifar-10-batches-py")

    assert load_dataset("cifar10", "test", root=root).source == "cifar-10-batches-py"


def test_cifar_batches_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch folder with a missing batch raises FileNotFoundError naming it."""
    root, _, _ = _isolate_roots(monkeypatch, tmp_path)
    folder = root / "cifar10" / "cifar-10-batches-py"
    _write_cifar_batches(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete: missing .*data_batch_3"):
        load_dataset("cifar10", "train", root=root)


def test_cifar_batches_reject_globals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch pickle that references a non-numpy global is rejected."""
    root, _, _ = _isolate_roots(monkeypatch, tmp_path)
    folder = root / "cifar10" / "cifar-10-batches-py"
    _write_cifar_batches(folder)
    with (folder / "test_batch").open("wb") as handle:
        pickle.dump({"data": Path("x"), "labels": []}, handle, protocol=2)
    with pytest.raises(ValueError, match=r"global pathlib\.\w*Path\w* is not allowed"):
        load_dataset("cifar10", "test", root=root)


def test_cifar_download_uses_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download=True calls torchvision's CIFAR10 on <root>/cifar10, then reads its folder."""
    import torchvision.datasets

    root, _, _ = _isolate_roots(monkeypatch, tmp_path)
    calls = []

    class FakeCIFAR10:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((Path(root), train, download))
            _write_cifar_batches(Path(root) / "cifar-10-batches-py")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    data = load_dataset("cifar10", "train", root=root, download=True)

    assert calls == [(root / "cifar10", True, True)]
    assert data.source == "cifar-10-batches-py"
    assert data.path == root / "cifar10" / "cifar-10-batches-py"


def test_cifar_download_skipped_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """download=True does not call torchvision when the root already has full CIFAR-10."""
    import torchvision.datasets

    root, _, _ = _isolate_roots(monkeypatch, tmp_path)
    _write_cifar_batches(root / "cifar-10-batches-py")

    def fail(**_: object) -> None:
        raise AssertionError("torchvision was called although the data is present")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fail)
    assert len(load_dataset("cifar10", "test", root=root, download=True)) == 3


def test_cifar_download_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed download raises RuntimeError that names the target folder."""
    import torchvision.datasets

    def offline(**_: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(RuntimeError, match=r"downloading CIFAR-10 into .*cifar10 failed"):
        load_dataset("cifar10", "train", root=tmp_path, download=True)


# Transforms


def test_normalize_values() -> None:
    """normalize maps uint8 pixels to (x / 255 - mean) / std in float32."""
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    output = normalize(images, mean=(0.0, 0.1, 0.5), std=(1.0, 0.2, 0.5))
    expected = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)

    assert output.dtype == torch.float32
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-6)


def test_normalize_float_input() -> None:
    """Floating point input is taken as [0, 1] pixels."""
    images = torch.full((1, 3, 2, 2), 0.5)
    output = normalize(images, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert torch.equal(output, torch.zeros_like(output))


def test_normalize_bad_channels() -> None:
    """A mean with the wrong number of channels raises ValueError."""
    with pytest.raises(ValueError, match="mean has 1 and std has 3 entries"):
        normalize(torch.zeros(1, 3, 2, 2), mean=(0.5,), std=(1.0, 1.0, 1.0))


def test_normalize_bad_std() -> None:
    """A zero standard deviation raises ValueError."""
    with pytest.raises(ValueError, match="must be positive"):
        normalize(torch.zeros(1, 1, 2, 2), mean=(0.5,), std=(0.0,))


def test_normalize_bad_shape() -> None:
    """A single image without a batch dimension raises ValueError."""
    with pytest.raises(ValueError, match=r"batch of shape \(N, C, H, W\)"):
        normalize(torch.zeros(3, 2, 2), mean=CIFAR10_MEAN, std=CIFAR10_STD)


def _reference_crop_flip(images: torch.Tensor, padding: int, offsets, flips) -> torch.Tensor:
    """Crop and flip image by image with slicing, the obvious slow way."""
    _, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    output = []
    for image, (top, left), mirrored in zip(padded, offsets, flips):
        window = image[:, top : top + height, left : left + width]
        output.append(window.flip(-1) if mirrored else window)
    return torch.stack(output)


@pytest.mark.parametrize("padding", [0, 1, 4])
def test_random_crop_flip_matches_reference(padding: int) -> None:
    """The batched crop equals a per-image crop at one of the valid offsets, maybe mirrored."""
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=generator)
    output = random_crop_flip(images, padding=padding, generator=generator)

    for index in range(len(images)):
        candidates = [
            _reference_crop_flip(images[index : index + 1], padding, [(top, left)], [mirrored])
            for top in range(2 * padding + 1)
            for left in range(2 * padding + 1)
            for mirrored in (False, True)
        ]
        assert any(torch.equal(output[index : index + 1], c) for c in candidates), index


def test_random_crop_flip_keeps_shape_dtype() -> None:
    """Augmentation keeps shape and dtype and changes a seeded batch."""
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    output = random_crop_flip(images, padding=4, generator=torch.Generator().manual_seed(0))

    assert output.shape == images.shape
    assert output.dtype == torch.uint8
    assert not torch.equal(output, images)


def test_random_crop_flip_seeded() -> None:
    """The same generator seed gives the same batch, another seed a different one."""
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    first = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(5))
    again = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(5))
    other = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(6))

    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_random_crop_flip_flip_rate() -> None:
    """With padding 0, about half of 2000 images are mirrored."""
    images = torch.arange(2).to(torch.uint8).view(1, 1, 1, 2).expand(2000, 1, 1, 2)
    output = random_crop_flip(images, padding=0, generator=torch.Generator().manual_seed(0))
    mirrored = (output[:, 0, 0, 0] == 1).float().mean().item()
    assert 0.45 < mirrored < 0.55, f"mirrored fraction {mirrored:.3f}"


def test_random_crop_flip_bad_padding() -> None:
    """A negative padding raises ValueError."""
    with pytest.raises(ValueError, match="padding=-1 must be an int >= 0"):
        random_crop_flip(torch.zeros(1, 3, 4, 4), padding=-1)


def test_random_crop_flip_class_bad_padding() -> None:
    """RandomCropFlip rejects a float padding."""
    with pytest.raises(ValueError, match="padding=2.5 must be an int >= 0"):
        RandomCropFlip(padding=2.5)


def test_default_padding_sizes() -> None:
    """Padding is one eighth of the image size: 4 px at 32, 20 px at 160."""
    assert default_padding(32) == 4
    assert default_padding(160) == 20
    assert default_padding(4) == 1


# Loaders


def test_loader_no_augment_is_identity() -> None:
    """With augment and shuffle off, batches are the normalised images in order."""
    data = _small_dataset()
    loader = make_loader(data, 10, train=False)
    x = torch.cat([batch for batch, _ in loader])
    y = torch.cat([labels for _, labels in loader])

    assert torch.equal(x, normalize(data.images, data.mean, data.std))
    assert torch.equal(y, data.labels)


def test_loader_augment_keeps_shape() -> None:
    """Augmented batches keep the image shape and the labels of their images."""
    data = _small_dataset()
    loader = make_loader(data, 8, train=True, augment=True)
    for x, y in loader:
        assert x.shape == (8, 3, 8, 8)
        assert y.shape == (8,)


def test_loader_same_seed_same_order() -> None:
    """Two loaders with the same seed yield identical batches in epoch 0."""
    data = _small_dataset()
    first = [y for _, y in make_loader(data, 6, train=True, seed=7)]
    second = [y for _, y in make_loader(data, 6, train=True, seed=7)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_loader_epoch_changes_order() -> None:
    """Another epoch gives another order, and set_epoch repeats an epoch exactly."""
    loader = make_loader(_small_dataset(), 4, train=True, seed=0)
    epoch0 = loader.indices()
    x0 = torch.cat([x for x, _ in loader])
    epoch1 = loader.indices()
    loader.set_epoch(0)
    x0_again = torch.cat([x for x, _ in loader])

    assert sorted(epoch0.tolist()) == list(range(24))
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(x0, x0_again)
    assert loader.epoch == 1


def test_loader_eval_shards_disjoint() -> None:
    """Evaluation shards are disjoint and cover every image once."""
    data = _small_dataset(count=25)
    shards = [
        make_loader(data, 4, train=False, distributed=True, num_replicas=3, rank=rank).indices()
        for rank in range(3)
    ]
    merged = torch.cat(shards).tolist()

    assert sorted(merged) == list(range(25))
    assert [len(shard) for shard in shards] == [9, 8, 8]


def test_loader_train_shards_equal() -> None:
    """Training shards have equal size, cover every image and differ in no more than padding."""
    data = _small_dataset(count=25)
    loaders = [
        make_loader(data, 3, train=True, seed=2, distributed=True, num_replicas=4, rank=rank)
        for rank in range(4)
    ]
    shards = [loader.indices().tolist() for loader in loaders]
    merged = [index for shard in shards for index in shard]

    assert {len(shard) for shard in shards} == {7}
    assert set(merged) == set(range(25))
    assert len(merged) - len(set(merged)) == 3
    assert len({len(loader) for loader in loaders}) == 1


def test_loader_train_shards_disjoint() -> None:
    """When the data splits evenly, training shards are disjoint in every epoch."""
    data = _small_dataset(count=24)
    for epoch in range(3):
        shards = [
            make_loader(data, 3, train=True, distributed=True, num_replicas=2, rank=rank).indices(
                epoch
            )
            for rank in range(2)
        ]
        assert sorted(torch.cat(shards).tolist()) == list(range(24)), epoch


def test_loader_limit_prefix() -> None:
    """limit keeps the first images of the data set."""
    loader = make_loader(_small_dataset(), 5, train=False, limit=10)
    y = torch.cat([labels for _, labels in loader])
    assert torch.equal(y, torch.arange(10) % 3)
    assert len(loader) == 2


def test_loader_drop_last() -> None:
    """Training drops the last partial batch by default; evaluation keeps it."""
    data = _small_dataset(count=10)
    assert len(make_loader(data, 4, train=True)) == 2
    assert len(make_loader(data, 4, train=False)) == 3
    assert [len(y) for _, y in make_loader(data, 4, train=False)] == [4, 4, 2]


def test_loader_custom_augment() -> None:
    """A callable augment receives the uint8 batch and a generator."""
    seen = []

    def invert(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seen.append((images.dtype, type(generator)))
        return 255 - images

    data = _small_dataset(count=4)
    x, _ = next(iter(make_loader(data, 4, train=False, augment=invert)))
    assert seen == [(torch.uint8, torch.Generator)]
    assert torch.equal(x, normalize(255 - data.images, data.mean, data.std))


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"batch_size": 0}, ValueError, "batch_size=0 must be an int >= 1"),
        ({"seed": -1}, ValueError, "seed=-1 must be an int >= 0"),
        ({"limit": 0}, ValueError, "limit=0 must be an int >= 1"),
        ({"num_replicas": 2, "rank": 0}, ValueError, "need distributed=True"),
        ({"distributed": True}, ValueError, "needs an initialised process group"),
        (
            {"distributed": True, "num_replicas": 2, "rank": 2},
            ValueError,
            "rank=2 must be smaller than num_replicas=2",
        ),
        ({"batch_size": 64}, ValueError, "leaves no batch"),
        ({"augment": "yes"}, TypeError, "augment must be a bool or a callable"),
    ],
)
def test_make_loader_bad_input(options: dict, error: type, pattern: str) -> None:
    """Invalid loader settings raise errors that name the setting."""
    arguments = {"batch_size": 4, "train": True, **options}
    batch_size = arguments.pop("batch_size")
    with pytest.raises(error, match=pattern):
        make_loader(_small_dataset(), batch_size, **arguments)


def test_loader_device_cpu() -> None:
    """device="cpu" builds the same batches as the default path."""
    data = _small_dataset()
    default = [x for x, _ in make_loader(data, 8, train=True, seed=4)]
    on_device = [x for x, _ in make_loader(data, 8, train=True, seed=4, device="cpu")]
    assert all(torch.equal(a, b) for a, b in zip(default, on_device))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loader_device_cuda() -> None:
    """On a CUDA device the batches match the CPU batches and stay on the GPU."""
    data = _small_dataset()
    cpu = [x for x, _ in make_loader(data, 8, train=True, seed=4)]
    gpu = [(x, y) for x, y in make_loader(data, 8, train=True, seed=4, device="cuda")]
    assert all(x.is_cuda and y.is_cuda for x, y in gpu)
    assert all(torch.equal(a, b.cpu()) for a, (b, _) in zip(cpu, gpu))


def test_loader_process_group(tmp_path: Path) -> None:
    """distributed=True reads world size and rank from an initialised process group."""
    import torch.distributed as dist

    store = f"file://{tmp_path / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        loader = make_loader(_small_dataset(), 4, train=True, distributed=True)
    finally:
        dist.destroy_process_group()
    assert (loader.num_replicas, loader.rank) == (1, 0)
    assert len(loader) == 6


def test_make_loader_bad_dataset() -> None:
    """A plain tensor is rejected with a hint to wrap it."""
    with pytest.raises(TypeError, match="dataset must be a flexhinm.data.ImageDataset"):
        make_loader(torch.zeros(4, 3, 8, 8), 2, train=True)


def test_set_epoch_negative() -> None:
    """A negative epoch raises ValueError."""
    loader = make_loader(_small_dataset(), 4, train=True)
    with pytest.raises(ValueError, match="epoch=-1 must be an int >= 0"):
        loader.set_epoch(-1)


def test_make_loaders_sample_rejected() -> None:
    """The single-split ImageNet sample has no train/evaluation pair."""
    with pytest.raises(ValueError, match="needs a data set with train and evaluation splits"):
        make_loaders("imagenet-sample", 8)


# ImageDataset


def test_image_dataset_bad_dtype() -> None:
    """Float images are rejected with a conversion hint."""
    with pytest.raises(TypeError, match=re.escape("images must be a uint8 tensor")):
        ImageDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"],
                     mean=(0.5,) * 3, std=(0.5,) * 3)


def test_image_dataset_bad_label() -> None:
    """A label outside the class range is rejected."""
    with pytest.raises(ValueError, match=r"labels span \[0, 2\] but there are 2 classes"):
        ImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), ["a", "b"],
                     mean=(0.5,) * 3, std=(0.5,) * 3)


def test_image_dataset_bad_labels_shape() -> None:
    """Labels whose length differs from the image count are rejected."""
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        ImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0]), ["a"],
                     mean=(0.5,) * 3, std=(0.5,) * 3)


def test_image_dataset_head_bad_count() -> None:
    """head(0) raises ValueError."""
    with pytest.raises(ValueError, match="count=0 must be a positive int"):
        _small_dataset().head(0)


def test_image_dataset_getitem() -> None:
    """Indexing returns one uint8 image and its label."""
    image, label = _small_dataset()[5]
    assert image.shape == (3, 8, 8)
    assert int(image[0, 0, 0]) == 5
    assert int(label) == 2


def test_load_dataset_folder_one_level_too_deep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A root that is the data set's own folder gets a hint to pass its parent instead."""
    root, _, _ = _isolate_roots(monkeypatch, tmp_path)
    inner = root / "cifar10"
    inner.mkdir(parents=True)
    (inner / "train.npz").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("cifar10", "train", root=inner)
    assert f"{inner} is the data set's own folder: use its parent {root}" in str(error.value)


def test_load_dataset_relative_env_names_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative FLEXHINM_DATA that finds nothing is reported with the folder it was read from."""
    _isolate_roots(monkeypatch, tmp_path)
    monkeypatch.setenv("FLEXHINM_DATA", "../shared/data")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("cifar10", "train")
    assert f"FLEXHINM_DATA=../shared/data is read from the current folder {tmp_path}" in str(error.value)
