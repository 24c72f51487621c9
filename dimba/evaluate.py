"""`dimba eval`: the held-out likelihood bound of a checkpoint, in bits per byte, beside the
reference lines (uniform, unigram, byte 4-gram) on the same text.

What is evaluated: the run's own validation split (rebuilt from the data config every
checkpoint records, or from the run directory's `.hydra/config.yaml`), or the given files:
text files and directories of them (tokenized with the checkpoint's tokenizer), or
directories written by `dimba data prepare` (their validation split). Text is cut into
windows of the training sequence length; a last, shorter window is evaluated as it is, so
every byte counts. The references are fit on the checkpoint's training split.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dimba.diffusion.bound import LN2, BitsPerByte, SequenceBound, bits_per_byte
from dimba.objectives import sequence_bound
from dimba.data.reference_models import ReferenceBits, reference_bits
from dimba.errors import ConfigError
from dimba.io.read import first_line

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 16
DEFAULT_SEQ_LEN = 128
REFERENCE_TRAIN_TOKENS = 8_000_000
"""The references are fit on at most this many tokens of the training split (its start)."""


class EvalError(Exception):
    """Bad input to the evaluation: one line, exit status 2."""


@dataclass
class Text:
    """Token windows to evaluate and what they stand for."""

    description: str
    windows: List[torch.Tensor]  # 1-D id tensors; all of seq_len but possibly the last of each source
    byte_counts: List[int]
    total_bytes: int
    eval_ids: np.ndarray
    eval_bytes: bytes


@dataclass
class EvalReport:
    checkpoint: str
    text: str
    samples: int
    seq_len: int
    bound: BitsPerByte
    references: Optional[ReferenceBits]
    references_note: str = ""
    terms: Dict[str, float] = field(default_factory=dict)
    objective: str = "diffusion"

    def as_json(self) -> Dict[str, Any]:
        return {"checkpoint": self.checkpoint, "objective": self.objective, "text": self.text, **asdict(self.bound),
                "samples": self.samples,
                "seq_len": self.seq_len, "terms_bpb": self.terms,
                "references_bpb": None if self.references is None else self.references.as_dict(),
                "references_note": self.references_note}


# ---------------------------------------------------------------------- the text
def training_record(model: Any, checkpoint: Path) -> Optional[Dict[str, Any]]:
    """The data and tokenizer configs a checkpoint trained on: recorded in it, or (checkpoints
    from before they were recorded) in the run directory's `.hydra/config.yaml`, the run
    being the folder above `progressive_checkpoints/` or `checkpoints/`; None if neither."""
    recorded = getattr(model, "data_record", None)
    if recorded is not None:
        return recorded
    for run in (checkpoint.parent.parent, checkpoint.parent):
        composed = run / ".hydra" / "config.yaml"
        if composed.is_file():
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(OmegaConf.load(composed), resolve=False)
            if isinstance(cfg, dict) and isinstance(cfg.get("data"), dict):
                return {"data": cfg["data"], "tokenizer": cfg.get("tokenizer") or {}}
    return None


def data_module_of(record: Dict[str, Any]) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    data = {k: v for k, v in dict(record["data"]).items()}
    tokenizer = {k: v for k, v in dict(record.get("tokenizer") or {}).items() if not str(k).startswith("_")}
    try:
        module = instantiate(data, seed=0, tokenizer=tokenizer or None, _convert_="all")
        module.prepare_data()
        module.setup("validate")
    except (ConfigError, OSError, InstantiationException) as exc:
        cause = exc.__cause__ if isinstance(exc, InstantiationException) and exc.__cause__ else exc
        raise EvalError(f"cannot rebuild the training data ({first_line(cause)}); pass --data") from None
    return module


def _check_tokenizer(model: Any, tokenizer: Any, where: str) -> None:
    from dimba.data.records import same_tokenizer, tokenizer_record

    if not same_tokenizer(getattr(model, "tokenizer_record", None), tokenizer_record(tokenizer)):
        raise EvalError(f"{where} is tokenized with {tokenizer.name}, not with the checkpoint's tokenizer "
                        f"({model.tokenizer.name}): evaluate text files instead")


def _raw_bytes(tokenizer: Any, ids: np.ndarray) -> bytes:
    """The bytes token ids stand for: themselves for the byte tokenizer (any bytes, even
    invalid UTF-8), the decoded text's UTF-8 otherwise."""
    if tokenizer.name == "bytes":
        return ids.astype(np.uint8).tobytes()
    return tokenizer.decode(ids.tolist()).encode("utf-8")


def _windows_of(ids: np.ndarray, seq_len: int) -> List[torch.Tensor]:
    tensor = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
    return [tensor[start:start + seq_len] for start in range(0, len(tensor), seq_len)]


def split_text(datamodule: Any, tokenizer: Any, description: str, seq_len: int) -> Text:
    """The validation split of a prepared data module, every token of it, in windows of `seq_len`."""
    val = datamodule.val_set
    if val is None or val.end <= val.start:
        raise EvalError(f"{description} has no validation tokens")
    ids = val.stream.read(val.start, val.end - val.start)
    windows = _windows_of(ids, seq_len)
    text = _raw_bytes(tokenizer, ids)
    return Text(description, windows, [tokenizer.byte_length(w.tolist()) for w in windows],
                tokenizer.byte_length(ids.tolist()), ids, text)


def file_text(paths: Sequence[str], tokenizer: Any, seq_len: int) -> Text:
    """Text files (and the text files of directories), each tokenized on its own."""
    from dimba.data.config import FILES_ACCEPTED, text_files

    windows: List[torch.Tensor] = []
    counts: List[int] = []
    all_ids: List[np.ndarray] = []
    raw: List[bytes] = []
    names: List[str] = []
    for index, name in enumerate(paths):
        try:
            files = text_files(f"--data[{index}]", name)
        except ConfigError:
            raise EvalError(f"--data {name}: no such file or directory; accepted: {FILES_ACCEPTED} "
                            "or a directory written by `dimba data prepare`") from None
        for path in files:
            data = _read_text(path)
            ids = np.asarray(tokenizer.encode_ids(data), dtype=np.int64)
            if tokenizer.decode(ids.tolist()) != data:
                raise EvalError(f"--data {path}: the checkpoint's tokenizer ({tokenizer.name}) cannot encode this text "
                                "(it does not decode back to the same characters)")
            for window in _windows_of(ids, seq_len):
                windows.append(window)
                counts.append(tokenizer.byte_length(window.tolist()))
            all_ids.append(ids)
            raw.append(data.encode("utf-8"))
            names.append(str(path))
    described = names[0] if len(names) == 1 else f"{len(names)} files ({names[0]}, ...)"
    return Text(described, windows, counts, sum(len(r) for r in raw), np.concatenate(all_ids), b"".join(raw))


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvalError(f"--data {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise EvalError(f"--data {path}: {exc.strerror or exc}") from None
    if not data:
        raise EvalError(f"--data {path}: empty text")
    return data


def text_to_evaluate(model: Any, data: Optional[Sequence[str]], module: Any, seq_len: int) -> Text:
    """The given files, or (no `data`) the validation split of the run's data `module`."""
    if not data:
        if module is None:
            raise EvalError("the checkpoint records no training data and no run directory holds its config: "
                            "pass --data FILE_OR_DIR")
        _check_tokenizer(model, module.tokenizer, "the run's data")
        return split_text(module, model.tokenizer, "the run's validation split", seq_len)
    prepared = [p for p in data if (Path(p) / "manifest.json").is_file()]
    if prepared:
        if len(data) > 1:
            raise EvalError("--data: one directory written by `dimba data prepare`, or text files and directories "
                            "of them, not both")
        from dimba.data.datamodule import ShardsDataModule

        try:
            module = ShardsDataModule(prepared[0], seq_len=1, batch_size=1)
            module.setup("validate")
        except (ConfigError, OSError) as exc:
            raise EvalError(f"--data {prepared[0]}: {first_line(exc)}") from None
        _check_tokenizer(model, module.tokenizer, f"--data {prepared[0]}")
        return split_text(module, model.tokenizer, f"the validation split of {prepared[0]}", seq_len)
    return file_text(data, model.tokenizer, seq_len)


# ---------------------------------------------------------------------- the references
def training_text(module: Any) -> Tuple[np.ndarray, bytes, str]:
    """(ids, bytes) of the start of the run's training split, and a note where it was cut."""
    train = module.train_set
    length = min(train.end - train.start, REFERENCE_TRAIN_TOKENS)
    ids = train.stream.read(train.start, length)
    tokenizer = module.tokenizer
    raw = _raw_bytes(tokenizer, ids)
    return ids, raw, "" if length == train.end - train.start else f"references fit on the first {length:,} training tokens"


# ---------------------------------------------------------------------- the bound
def bound_of_windows(model: Any, windows: Sequence[torch.Tensor], samples: int, seed: int = 0,
                     max_batch: int = 64) -> SequenceBound:
    """The bound of every window; windows of equal length go through the model together."""
    generator = torch.Generator().manual_seed(seed)
    by_length: Dict[int, List[int]] = {}
    for index, window in enumerate(windows):
        by_length.setdefault(window.numel(), []).append(index)
    parts: Dict[int, SequenceBound] = {}
    for length, indices in by_length.items():
        parts[length] = sequence_bound(model, torch.stack([windows[i] for i in indices]), samples, generator,
                                       max_batch=max_batch)
    order = [i for indices in by_length.values() for i in indices]
    merged = SequenceBound.cat(list(parts.values()))
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return SequenceBound(*(getattr(merged, name)[inverse] for name in
                           ("nats", "mc_var", "prior", "diffusion", "reconstruction")))


def evaluate(checkpoint: str, data: Optional[Sequence[str]] = None, samples: int = DEFAULT_SAMPLES,
             seq_len: Optional[int] = None, references: bool = True, seed: int = 0) -> EvalReport:
    """The bound of `checkpoint` on `data` (None: the run's validation split)."""
    from dimba.io.load import load_model
    from dimba.model.denormals import flush_denormals

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2 or samples % 2:
        raise EvalError(f"--samples must be an even integer >= 2, got {samples}")
    if seq_len is not None and seq_len < 1:
        raise EvalError(f"--seq-len must be a positive integer, got {seq_len}")
    flush_denormals()
    model = load_model(checkpoint)
    record = training_record(model, Path(checkpoint))
    if seq_len is None:
        seq_len = int((record or {}).get("data", {}).get("seq_len") or DEFAULT_SEQ_LEN)
    # The run's data, built once: its validation split (no --data) and its training split (references).
    module, note = None, "no training data recorded: reference lines need the checkpoint's training split"
    if record is not None and (not data or references):
        try:
            module = data_module_of(record)
        except EvalError as exc:
            if not data:
                raise
            note = str(exc)
    text = text_to_evaluate(model, data, module, seq_len)
    bound = bound_of_windows(model, text.windows, samples, seed)
    tokens = torch.tensor([w.numel() for w in text.windows])
    result = bits_per_byte(bound, tokens, torch.tensor(text.byte_counts), total_bytes=text.total_bytes)
    terms = {name: float(getattr(bound, name).sum()) / LN2 / text.total_bytes
             for name in ("prior", "diffusion", "reconstruction")}
    refs = None
    if not references:
        note = "skipped"
    elif module is not None:
        train_ids, train_bytes, note = training_text(module)
        refs = reference_bits(train_ids, text.eval_ids, train_bytes, text.eval_bytes, model.config.vocab_size)
    return EvalReport(str(checkpoint), text.description, samples, seq_len, result, refs, note, terms,
                      model.config.objective)


def format_report(report: EvalReport) -> str:
    b = report.bound
    lines = [
        f"checkpoint:   {report.checkpoint}",
        f"text:         {report.text}: {b.bytes:,} bytes, {b.tokens:,} tokens, {b.sequences:,} sequences "
        f"(seq_len {report.seq_len})",
        *_likelihood_lines(report),
    ]
    if report.references is not None:
        r = report.references
        lines += ["on the same text, fit on the training split:",
                  f"  uniform over the vocabulary  {r.uniform:.4f} bits per byte",
                  f"  unigram (add-one)            {r.unigram:.4f} bits per byte",
                  f"  byte 4-gram (interpolated)   {r.byte_4gram:.4f} bits per byte"]
        if report.references_note:
            lines.append(f"  ({report.references_note})")
    else:
        lines.append(f"references:   none ({report.references_note})")
    return "\n".join(lines)


def _likelihood_lines(report: EvalReport) -> List[str]:
    """The model's figure: the continuous or masked bound (with its Monte Carlo error), or the
    autoregressive model's exact log-likelihood."""
    b = report.bound
    if report.objective == "ar":
        return [f"likelihood:   {b.bpb:.4f} bits per byte (exact: autoregressive, no sampling)",
                f"              {b.bits_per_token:.4f} bits per token"]
    if report.objective == "masked":
        return [f"bound:        {b.bpb:.4f} ± {b.bpb_se:.4f} bits per byte (masked diffusion; Monte Carlo standard "
                f"error, {report.samples} mask draws per sequence)",
                f"              {b.bits_per_token:.4f} bits per token"]
    return [f"bound:        {b.bpb:.4f} ± {b.bpb_se:.4f} bits per byte (Monte Carlo standard error, "
            f"{report.samples} timestep samples per sequence)",
            f"              {b.bits_per_token:.4f} bits per token; terms: diffusion {report.terms['diffusion']:.4f}, "
            f"reconstruction {report.terms['reconstruction']:.4f}, prior {report.terms['prior']:.2g} bits per byte"]
