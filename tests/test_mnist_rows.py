"""MNIST rows (seed 004): IDX folders, splits, layouts, downloads, image prediction."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, compose_config, train_run
from PIL import Image, ImageDraw

from rnnlab import predict
from rnnlab.builder import build, build_datamodule
from rnnlab.codecs.mnist import ImageCodec, to_sequence
from rnnlab.data import mnist
from rnnlab.data.mnist import MnistRowsData
from rnnlab.errors import ConfigError, DataError, InputError
from rnnlab.inference import load_checkpoint

SHARED_MNIST = SHARED_DATA / "mnist"
needs_shared = pytest.mark.skipif(
    not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"shared MNIST files not found in {SHARED_MNIST}",
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Generated IDX files ---------------------------------------------------------------------------
def idx_bytes(array: torch.Tensor) -> bytes:
    """uint8 tensor -> IDX file contents (magic 0x0000_08_<ndim>, big-endian dims, data)."""
    header = bytes([0, 0, 0x08, array.dim()])
    header += b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + bytes(array.flatten().tolist())


def write_idx(path: Path, array: torch.Tensor, compress: bool = True) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def numbered_images(count: int, height: int = 28, width: int = 28, offset: int = 0):
    """Images whose first two pixels encode their index (so splits can be checked), labels."""
    generator = torch.Generator().manual_seed(count + offset)
    images = torch.randint(0, 256, (count, height, width), generator=generator, dtype=torch.uint8)
    ids = torch.arange(offset, offset + count)
    images[:, 0, 0], images[:, 0, 1] = ids // 256, ids % 256
    return images, (ids % 10).to(torch.uint8)


def image_ids(dataset) -> list[int]:
    images = dataset.tensors["images"].long()
    return (images[:, 0, 0] * 256 + images[:, 0, 1]).tolist()


def write_part(folder: Path, part: str, images, labels, compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    images_stem, labels_stem = mnist.PARTS[part]
    write_idx(folder / f"{images_stem}{suffix}", images, compress)
    write_idx(folder / f"{labels_stem}{suffix}", labels, compress)


@pytest.fixture
def t10k_folder(tmp_path) -> Path:
    """A shared-style folder: only the t10k pair, 200 numbered random images."""
    folder = tmp_path / "mnist"
    write_part(folder, "t10k", *numbered_images(200))
    return folder


def setup(**kwargs) -> MnistRowsData:
    datamodule = MnistRowsData(**kwargs)
    datamodule.setup()
    return datamodule


# Layouts and splits ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layout,shape,features", [("rows", (6, 5), 5), ("columns", (5, 6), 6), ("pixels", (30, 1), 1)]
)
def test_layouts_give_sequences_of_scaled_pixels(tmp_path, layout, shape, features):
    write_part(tmp_path, "t10k", *numbered_images(40, height=6, width=5), compress=False)
    datamodule = setup(path=str(tmp_path), layout=layout, batch_size=4)
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"inputs", "targets"}  # fixed length: no lengths
    assert batch["inputs"].shape == (4, *shape) and batch["inputs"].dtype == torch.float32
    assert batch["inputs"].min() >= 0.0 and batch["inputs"].max() <= 1.0
    assert datamodule.model_kwargs() == {"input_size": features, "num_classes": 10}
    stored = datamodule.train_set.tensors["images"]
    assert stored.dtype == torch.uint8  # scaled per batch, not in memory
    rows = stored[:2].float() / 255
    expected = {"rows": rows, "columns": rows.transpose(1, 2), "pixels": rows.reshape(2, 30, 1)}
    torch.testing.assert_close(
        datamodule.train_set.__getitems__([0, 1])["inputs"], expected[layout]
    )


def test_t10k_only_folder_is_split_disjointly_and_deterministically(t10k_folder):
    first = setup(path=str(t10k_folder), seed=3)
    ids = {split: image_ids(getattr(first, f"{split}_set")) for split in ("train", "val", "test")}
    assert {split: len(v) for split, v in ids.items()} == {"train": 160, "val": 20, "test": 20}
    assert set().union(*map(set, ids.values())) == set(range(200))
    again = setup(path=str(t10k_folder), seed=3)
    assert image_ids(again.test_set) == ids["test"] and image_ids(again.train_set) == ids["train"]
    other = setup(path=str(t10k_folder), seed=4)
    assert image_ids(other.test_set) != ids["test"]
    capped = setup(path=str(t10k_folder), seed=3, train_size=50)
    assert len(capped.train_set) == 50 and image_ids(capped.test_set) == ids["test"]


def test_train_pair_gives_train_and_val_and_t10k_the_test_set(tmp_path):
    write_part(tmp_path, "train", *numbered_images(100))
    write_part(tmp_path, "t10k", *numbered_images(30, offset=1000), compress=False)
    datamodule = setup(path=str(tmp_path), val_fraction=0.2)
    assert image_ids(datamodule.test_set) == list(range(1000, 1030))
    train, val = image_ids(datamodule.train_set), image_ids(datamodule.val_set)
    assert (len(train), len(val)) == (80, 20) and set(train) | set(val) == set(range(100))


def test_mismatched_image_and_label_counts_name_both_files(tmp_path):
    images, labels = numbered_images(10)
    write_part(tmp_path, "t10k", images, labels[:9])
    with pytest.raises(DataError) as error:
        setup(path=str(tmp_path))
    message = str(error.value)
    assert "t10k-images-idx3-ubyte.gz has 10 images" in message
    assert "t10k-labels-idx1-ubyte.gz has 9 labels" in message


def test_missing_files_and_bad_options_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="no MNIST IDX files"):
        setup(path=str(tmp_path))
    with pytest.raises(DataError, match="not a folder"):
        setup(path=str(tmp_path / "nowhere"))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(DataError, match="too short for an IDX header"):
        setup(path=str(tmp_path))
    with pytest.raises(ConfigError, match="data.layout"):
        MnistRowsData(layout="diagonal")


# Configs and training ----------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_task_composes_and_builds_with_every_cell(t10k_folder, tmp_path, cell):
    cfg = compose_config(
        "task=mnist_rows", f"cell={cell}", f"data.path={t10k_folder}", output_dir=tmp_path
    )
    assert (cfg.task_name, cfg.monitor, cfg.model.cell) == ("mnist_rows", "val/acc", cell)
    _, module = build(cfg)
    assert type(module.net.rnn).__name__ == {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}[cell]
    assert module.net.embed.in_features == 28 and module.net.head.out_features == 10


def test_keras_preset_has_the_seed_model(t10k_folder, tmp_path):
    cfg = compose_config("experiment=keras_mnist_rows", f"data.path={t10k_folder}")
    assert cfg.task_name == "mnist_rows" and cfg.trainer.max_epochs == 3
    _, module = build(cfg)
    net = module.net
    assert (net.rnn.num_layers, net.rnn.hidden_size, net.rnn.dropout) == (2, 128, 0.2)
    assert [type(layer).__name__ for layer in net.head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert net.head[0].out_features == 32


# Prediction from image files ---------------------------------------------------------------------
def shared_or_drawn_digit() -> torch.Tensor:
    """The first shared MNIST test digit, or a drawn "0" like one (white strokes on black, a
    20x20 box centred in 28x28): noise would not survive the JPEG round trip a photo takes."""
    if (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        images, _ = mnist.read_pair(*mnist.find_part(SHARED_MNIST, "t10k"), num_classes=10)
        return images[0]
    image = Image.new("L", (28, 28))
    ImageDraw.Draw(image).ellipse((8, 4, 19, 23), outline=255, width=3)
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(28, 28)


def save_png(pixels: torch.Tensor, path: Path, invert: bool = False) -> Path:
    pixels = 255 - pixels if invert else pixels
    height, width = pixels.shape
    Image.frombytes("L", (width, height), bytes(pixels.flatten().tolist())).save(path)
    return path


def test_png_inputs_are_read_like_the_training_images(tmp_path):
    digit = shared_or_drawn_digit()
    codec = ImageCodec()  # predicting needs no data
    expected = to_sequence(digit[None], "rows")[0]
    white_on_black = save_png(digit, tmp_path / "digit.png")
    black_on_white = save_png(digit, tmp_path / "inverted.png", invert=True)
    for path in (white_on_black, black_on_white):
        torch.testing.assert_close(codec.encode_example(str(path))["inputs"], expected)
    big = Image.open(white_on_black).resize((112, 112), Image.Resampling.NEAREST)
    big.convert("RGB").save(tmp_path / "big.jpg", quality=95)
    resized = codec.encode_example(str(tmp_path / "big.jpg"))["inputs"]
    assert resized.shape == (28, 28) and (resized - expected).abs().mean() < 0.05
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="cannot read it as an image"):
        codec.encode_example(str(tmp_path / "notes.txt"))
    with pytest.raises(InputError, match="no such image file"):
        codec.encode_example(str(tmp_path / "missing.png"))
    batch = codec.encode([str(white_on_black)] * 3)
    assert batch["inputs"].shape == (3, 28, 28)
    probs = torch.tensor([[0.01] * 7 + [0.91] + [0.01] * 2])
    assert codec.decode(batch, {"probs": probs}) == ["7 (p=0.91)"]


def test_predict_cli_takes_image_as_an_alias_of_text(t10k_folder, tmp_path, capsys):
    train_run(
        tmp_path / "run",
        "task=mnist_rows",
        f"data.path={t10k_folder}",
        "data.train_size=32",
        "model.hidden_size=8",
        "trainer.max_epochs=1",
        "logger=none",
        "test=false",
    )
    capsys.readouterr()  # the training output
    ckpt = f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}"
    png = save_png(numbered_images(1)[0][0], tmp_path / "digit.png")
    for key in ("image", "text"):
        assert predict.main([ckpt, f"{key}={png}"]) == 0
        answer = capsys.readouterr().out.strip()
        assert answer[0] in "0123456789" and answer[1:].startswith(" (p=")
    assert predict.main([ckpt, f"image={png}", f"text={png}"]) == 2
    assert predict.main([ckpt, f"image={tmp_path / 'none.png'}"]) == 2
    assert "no such image file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_on_shared(tmp_path_factory):
    """A small GRU trained on 1,500 shared images (about 7 s); returns (metrics, run dir)."""
    output_dir = tmp_path_factory.mktemp("mnist_rows")
    metrics, _ = train_run(
        output_dir,
        "task=mnist_rows",
        "cell=gru",
        f"data.path={SHARED_MNIST}",
        "data.train_size=1500",
        "data.val_fraction=0.05",
        "data.test_fraction=0.05",
        "data.batch_size=32",
        "model.embedding_dim=32",
        "model.hidden_size=64",
        "optimizer.lr=1e-2",
        "trainer.max_epochs=5",
        "logger=none",
    )
    return metrics, output_dir


@needs_shared
@pytest.mark.slow
def test_learns_digits_from_a_few_shared_images(trained_on_shared):
    metrics, _ = trained_on_shared
    assert metrics["test/acc"] >= 0.80, metrics


@needs_shared
@pytest.mark.slow
def test_predict_reads_png_files_white_or_black_ink(
    trained_on_shared, tmp_path, capsys, monkeypatch
):
    _, output_dir = trained_on_shared
    ckpt = output_dir / "checkpoints" / "last.ckpt"
    cfg, codec, module = load_checkpoint(ckpt)
    datamodule = build_datamodule(cfg, codec)
    datamodule.setup()
    batch = datamodule.test_set.__getitems__(list(range(50)))
    right = (module.net(batch["inputs"]).argmax(-1) == batch["targets"]).nonzero().flatten()
    index = int(right[0])  # an image the model gets right: this tests the file path, not accuracy
    pixels, label = datamodule.test_set.tensors["images"][index], int(batch["targets"][index])
    for invert in (False, True):
        png = save_png(pixels, tmp_path / f"digit-{invert}.png", invert=invert)
        assert predict.main([f"ckpt_path={ckpt}", f"image={png}"]) == 0
        assert capsys.readouterr().out.startswith(f"{label} (p=")
    paths = [str(tmp_path / "digit-False.png"), str(tmp_path / "missing.png")]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(paths) + "\n"))
    assert predict.main([f"ckpt_path={ckpt}"]) == 1  # one path per line; the missing one fails
    out = capsys.readouterr().out.split("\n")
    assert out[0].startswith(f"{label} (p=") and out[1].startswith("!error:")
    pairs = datamodule.sample_pairs("test", 4)
    assert all(Path(path).is_file() for path, _ in pairs)
    assert [answer for _, answer in pairs] == [
        str(int(t)) for t in datamodule.test_set.tensors["targets"][:4]
    ]


# Downloading -------------------------------------------------------------------------------------
class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        self.server.requests.append(self.path)


@contextlib.contextmanager
def serve(folder: Path):
    """An HTTP server on 127.0.0.1 (loopback only) serving `folder`; yields (base URL, paths)."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=folder)
    )
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mnist/", server.requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def published(tmp_path, monkeypatch) -> Path:
    """Four small gz IDX files under <root>/mnist/, registered as the published files' MD5s."""
    root = tmp_path / "server"
    write_part(root / "mnist", "train", *numbered_images(60))
    write_part(root / "mnist", "t10k", *numbered_images(20, offset=500))
    md5 = {
        file.name: hashlib.md5(file.read_bytes()).hexdigest() for file in (root / "mnist").iterdir()
    }
    variant = mnist.VARIANTS["mnist"]
    monkeypatch.setitem(mnist.VARIANTS, "mnist", mnist.Variant(variant.folder, "", md5))
    return root


def test_without_path_the_files_are_downloaded_checked_and_cached(published, tmp_path):
    cache = tmp_path / "cache"
    with serve(published) as (url, requests):
        datamodule = MnistRowsData(cache_dir=str(cache), mirror=url, val_fraction=0.25)
        datamodule.prepare_data()
        datamodule.setup()
        assert sorted(requests) == sorted(f"/mnist/{name}" for name in mnist.VARIANTS["mnist"].md5)
        assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(
            mnist.VARIANTS["mnist"].md5
        )
        assert (len(datamodule.train_set), len(datamodule.val_set)) == (45, 15)
        assert image_ids(datamodule.test_set) == list(range(500, 520))
        requests.clear()
        setup(cache_dir=str(cache), mirror=url)  # cached and verified: no network
        assert requests == []


def test_download_checks_md5_and_explains_offline_use(published, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    variant = mnist.VARIANTS["mnist"]
    wrong = {name: "0" * 32 for name in variant.md5}
    monkeypatch.setitem(mnist.VARIANTS, "mnist", mnist.Variant("mnist", "", wrong))
    with serve(published) as (url, _), pytest.raises(DataError, match="Checksum mismatch"):
        MnistRowsData(cache_dir=str(cache), mirror=url).prepare_data()
    with serve(published) as (url, _):
        pass  # the port is closed now: an unreachable mirror
    with pytest.raises(DataError) as error:
        MnistRowsData(cache_dir=str(cache), mirror=url).prepare_data()
    assert "put it at" in str(error.value) and "data.path" in str(error.value)
