"""Make the tiny ONNX test fixtures under tests/fixtures/models/.

Run from the repository root:

    python examples/export_fixtures.py

What it makes (all seeded, re-runnable, byte-for-byte deterministic for a given
torch / transformers / onnxruntime / tokenizers install):

* tiny randomly-initialised Hugging Face models (hidden 32, 2 layers, 4 heads,
  intermediate 64, 64 positions, vocabulary of VOCAB_SIZE tokens), every
  parameter perturbed by seeded normal noise so that LayerNorm gains/biases and
  all linear biases are non-trivial, exported with the TorchScript exporter
  (``torch.onnx.export(..., dynamo=False)``) with dynamic batch and sequence
  axes on every input and output;
* ``bert_qa_ort_optimized.onnx`` / ``bert_qa_ort_fastgelu.onnx``: the opset-14
  BERT passed through ``onnxruntime.transformers.optimizer`` so that the
  com.microsoft fused ops (Attention, SkipLayerNormalization,
  EmbedLayerNormalization, BiasGelu, FastGelu) appear;
* ``tiny-bert-tokenizer.json``: a WordPiece tokenizer (``tokenizers`` library)
  whose vocabulary has exactly VOCAB_SIZE entries, matching every model;
* ``README.md``: versions, sizes and op histograms of every file.

Tools needed (they are NOT project dependencies, the test-suite needs no torch):
``pip install torch==2.13.0`` then ``pip install 'transformers>=4.40,<5'``;
plus ``onnx``, ``onnxruntime`` and ``tokenizers`` that the project already uses.
"""

from __future__ import annotations

import collections
import hashlib
import string
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "tests" / "fixtures" / "models"

VOCAB_SIZE = 1024
HIDDEN = 32
LAYERS = 2
HEADS = 4
INTERMEDIATE = 64
MAX_POS = 64
BATCH, SEQ = 2, 16
NOISE_STD = 0.05

# Token ids shared by the tokenizer and every model.  The layout is RoBERTa's
# (<s>=0, <pad>=1, </s>=2, <unk>=3) so one tokenizer serves BERT-style and
# RoBERTa-style models alike: pad id 1 everywhere.
SPECIAL_TOKENS = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]
CLS_ID, PAD_ID, SEP_ID, UNK_ID, MASK_ID = range(5)

WORDS = """
the of and to in is was that for on as with by he at from his it an were are
which be this had not or have but one their also has they its first new after
who been two all more her other she can when there time would into no only most
some may up out about over we years year many these him than then between three
world during later under where made such so city used known if what while school
part united states people both before war through because national american
including well since called each same university being them did back around
another game found second season any work life family government number four
became early name however our will like do just could should make how very
even much said take way own day long good great high right still home house
left down off end place small large show against within until area series
region south north east west old group following best five county film music
team album released river based began league near several along among around
company general water public death local major club total million children due
population band church around system age six early final period day days night
often side town village head main member members history form power political
party president order history line point last next little man men woman women
young against few without another case city team king country led set held
moved play played playing player players son daughter father mother brother
sister wife husband friend friends love land line room road street car book
books story stories word words page paper letter letters list lot kind sort
type types example question questions answer answers fact facts idea ideas
reason reasons result results problem problems service services level levels
field fields point points thing things area areas space market money business
health program programs course courses center office office job jobs rate
rates interest interests process data information study studies research
science art arts history language languages english french german spanish
italian chinese japanese russian british european african asian america
europe africa asia china japan india canada france germany italy spain london
paris york california texas washington island islands mountain mountains sea
ocean lake lakes forest tree trees plant plants animal animals bird birds fish
dog dogs cat cats horse horses food foods air fire earth light sun moon star
stars sky rain snow wind weather summer winter spring autumn morning evening
week weeks month months hour hours minute minutes today tomorrow yesterday
always never sometimes usually already again once twice ever soon now here
there everywhere somewhere nowhere away together alone inside outside above
below behind beside beyond across toward towards upon onto per via among
seven eight nine ten eleven twelve twenty thirty forty fifty hundred thousand
half third fourth fifth single double least less more most many much few
every each either neither whether though although unless whereas yet because
why who whom whose which whatever whoever wherever whenever however therefore
thus hence indeed perhaps maybe quite rather really almost nearly enough
too very only just even still also already simply actually certainly clearly
probably possibly especially particularly generally usually mainly mostly
largely partly fully entirely completely exactly directly finally recently
currently originally previously eventually immediately quickly slowly easily
hard better worse best worst big bigger biggest small smaller smallest short
shorter long longer longest wide narrow deep shallow heavy light dark bright
hot cold warm cool dry wet clean dirty full empty open closed free busy easy
difficult simple complex important possible impossible necessary available
common rare similar different special general specific certain sure true false
real original modern ancient recent current former future past present late
early happy sad angry afraid strong weak rich poor cheap expensive safe
dangerous healthy sick alive dead human natural social cultural economic
military religious legal medical financial technical personal private public
official international royal federal central northern southern eastern western
red blue green yellow black white brown gray orange purple pink gold silver
go goes went gone going come comes came coming get gets got getting give gives
gave given giving take takes took taken taking make makes making see sees saw
seen seeing know knows knew knowing think thinks thought thinking say says
saying tell tells told telling ask asks asked asking find finds finding use
uses using want wants wanted wanting look looks looked looking need needs
needed feel feels felt try tries tried trying leave leaves leaving call calls
keep keeps kept let lets begin begins started start starts seem seems seemed
help helps helped turn turns turned put puts bring brings brought hold holds
write writes wrote written writing read reads reading run runs ran running
stand stands stood sit sits sat lose loses lost pay pays paid meet meets met
include includes included lead leads learn learns learned change changes changed
follow follows followed stop stops stopped create creates created speak speaks
spoke spoken allow allows allowed add adds added spend spent grow grows grew
grown open opens opened walk walks walked win wins won offer offers offered
remember remembered consider considered appear appears appeared buy bought
wait waited serve served die died send sent expect expected build builds
stay stayed fall fell fallen cut reach reached kill killed remain remains
remained suggest suggested raise raised pass passed sell sold require required
report reported decide decided pull pulled break broke broken return returned
describe described develop developed produce produced carry carried receive
received join joined live lives lived die dies move moves believe believed
happen happened provide provided understand understood watch watched
continue continued become becomes set sets show shows showed shown hear heard
play plays mean means meant love loved like liked live born design designed
establish established publish published record recorded form formed
operate operated represent represented base support supported
title award awards election elections law laws court army force forces
battle station stations road roads building buildings bridge church churches
hospital hospitals museum library park parks garden hotel restaurant shop store
stores bank market street streets port airport train trains ship ships plane
boat bus engine machine machines computer computers phone internet network
software system systems model models design version code test tests method
methods theory energy matter body bodies hand hands eye eyes face head heart
blood bone skin hair foot feet arm arms leg legs mind voice sound sounds color
colors shape size weight height length distance speed temperature pressure
value values price prices cost costs income tax taxes trade industry product
products production sales growth history event events experience member policy
community society culture art artist artists song songs singer dance theatre
theater television radio news newspaper magazine journal article articles
novel poem poet writer writers author authors editor director actor actress
character characters role roles scene episode episodes show stage concert
tour record label single track tracks video videos image images picture
pictures photo photos camera
"""


# ----------------------------------------------------------------------------
# tokenizer


def tokenizer_vocab(size: int = VOCAB_SIZE) -> list[str]:
    chars = list(string.ascii_lowercase) + list(string.digits) + list(string.punctuation)
    vocab = SPECIAL_TOKENS + chars + ["##" + c for c in chars]
    seen = set(vocab)
    for w in WORDS.split():
        if len(vocab) == size:
            break
        if w not in seen:
            seen.add(w)
            vocab.append(w)
    if len(vocab) != size:
        raise SystemExit(f"word list too short: {len(vocab)} < {size}")
    return vocab


def build_tokenizer(path: Path) -> Tokenizer:
    vocab = {tok: i for i, tok in enumerate(tokenizer_vocab())}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    # mark them special (already in the vocabulary, so ids do not change): they
    # are then matched whole in raw text and skipped by decode()
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.save(str(path), pretty=True)
    return tok


# ----------------------------------------------------------------------------
# models


class QAWrapper(torch.nn.Module):
    """Positional inputs in, (start_logits, end_logits) out."""

    def __init__(self, model: torch.nn.Module, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *args):
        out = self.model(**dict(zip(self.input_names, args)), return_dict=True)
        return out.start_logits, out.end_logits


class EncoderWrapper(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *args):
        return self.model(**dict(zip(self.input_names, args)), return_dict=True).last_hidden_state


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Add seeded N(0, NOISE_STD) noise to every parameter (LayerNorm gains
    leave 1, biases leave 0, padding rows leave 0)."""
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * NOISE_STD)


def make_inputs(names: list[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """[2, 16] inputs: row 0 is a full question/context pair, row 1 is padded
    after 10 tokens (mask 0, pad id)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB_SIZE, (BATCH, SEQ), generator=gen, dtype=torch.int64)
    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    types = torch.zeros(BATCH, SEQ, dtype=torch.int64)
    lengths = [SEQ, 10]
    for b, n in enumerate(lengths):
        ids[b, 0] = CLS_ID
        ids[b, n // 2] = SEP_ID
        ids[b, n - 1] = SEP_ID
        types[b, n // 2 + 1 : n] = 1
        ids[b, n:] = PAD_ID
        mask[b, n:] = 0
    table = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {n: table[n] for n in names}


def common(cfg_cls, **kw):
    kw.setdefault("vocab_size", VOCAB_SIZE)
    cfg = cfg_cls(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def bert_config(**kw):
    return common(
        transformers.BertConfig,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POS,
        type_vocab_size=2,
        hidden_act=kw.pop("hidden_act", "gelu"),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=PAD_ID,
        **kw,
    )


def build_bert_qa():
    return transformers.BertForQuestionAnswering(bert_config())


def build_distilbert_qa():
    cfg = common(
        transformers.DistilBertConfig,
        dim=HIDDEN,
        n_layers=LAYERS,
        n_heads=HEADS,
        hidden_dim=INTERMEDIATE,
        max_position_embeddings=MAX_POS,
        activation="gelu",
        dropout=0.0,
        attention_dropout=0.0,
        qa_dropout=0.0,
        pad_token_id=PAD_ID,
    )
    return transformers.DistilBertForQuestionAnswering(cfg)


def build_roberta_qa():
    cfg = common(
        transformers.RobertaConfig,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POS,  # usable sequence length: MAX_POS - PAD_ID - 1 = 62
        type_vocab_size=1,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        bos_token_id=CLS_ID,
        pad_token_id=PAD_ID,
        eos_token_id=SEP_ID,
    )
    return transformers.RobertaForQuestionAnswering(cfg)


def build_albert_qa():
    cfg = common(
        transformers.AlbertConfig,
        embedding_size=16,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_hidden_groups=1,  # one group, shared by both layers
        inner_group_num=1,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POS,
        type_vocab_size=2,
        hidden_act="gelu_new",  # ALBERT's own default
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        classifier_dropout_prob=0.0,
        pad_token_id=PAD_ID,
        bos_token_id=CLS_ID,
        eos_token_id=SEP_ID,
    )
    return transformers.AlbertForQuestionAnswering(cfg)


def build_minilm_encoder():
    return transformers.BertModel(bert_config(hidden_act="gelu_new"), add_pooling_layer=False)


QA_OUT = ["start_logits", "end_logits"]
BERT_IN = ["input_ids", "attention_mask", "token_type_ids"]
TWO_IN = ["input_ids", "attention_mask"]

# file name, builder, seed, inputs, outputs, opset, wrapper
EXPORTS = [
    ("bert_qa_opset14.onnx", build_bert_qa, 14, BERT_IN, QA_OUT, 14, QAWrapper),
    ("bert_qa_opset17.onnx", build_bert_qa, 14, BERT_IN, QA_OUT, 17, QAWrapper),
    ("bert_qa_opset18.onnx", build_bert_qa, 14, BERT_IN, QA_OUT, 18, QAWrapper),
    ("distilbert_qa_opset14.onnx", build_distilbert_qa, 21, TWO_IN, QA_OUT, 14, QAWrapper),
    ("roberta_qa_opset17.onnx", build_roberta_qa, 31, TWO_IN, QA_OUT, 17, QAWrapper),
    ("albert_qa_opset17.onnx", build_albert_qa, 41, BERT_IN, QA_OUT, 17, QAWrapper),
    (
        "minilm_encoder_opset17.onnx",
        build_minilm_encoder,
        51,
        BERT_IN,
        ["last_hidden_state"],
        17,
        EncoderWrapper,
    ),
]


def seeded_model(builder, seed: int) -> torch.nn.Module:
    """`builder()` under `torch.manual_seed(seed)`, perturbed, in eval mode: the exported model."""
    torch.manual_seed(seed)
    model = builder()
    perturb_(model, seed)
    return model.eval()


def build_model(name: str) -> torch.nn.Module:
    """The torch model behind fixture `name` (a file name of EXPORTS, e.g.
    "bert_qa_opset17.onnx"), weights identical to the exported ones. Importing this
    script has no side effects, so tests can rebuild a fixture's model with it."""
    for file_name, builder, seed, *_ in EXPORTS:
        if file_name == name:
            return seeded_model(builder, seed)
    raise KeyError(f"no fixture named {name!r}; known: {[spec[0] for spec in EXPORTS]}")


def export(name, builder, seed, in_names, out_names, opset, wrapper) -> dict:
    model = seeded_model(builder, seed)
    module = wrapper(model, in_names).eval()
    inputs = make_inputs(in_names)
    dyn = {n: {0: "batch", 1: "sequence"} for n in in_names + out_names}
    path = OUT_DIR / name
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(inputs[n] for n in in_names),
            str(path),
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=dyn,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        ref = module(*[inputs[n] for n in in_names])
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    normalise(path)
    got = run_ort(path, {n: t.numpy() for n, t in inputs.items()})
    for r, g, o in zip(ref, got, out_names):
        err = float(np.max(np.abs(r.numpy() - g)))
        if err > 1e-4:
            raise SystemExit(f"{name}: {o} differs from torch by {err}")
    return {n: t.numpy() for n, t in inputs.items()}


def normalise(path: Path) -> None:
    """Drop exporter doc strings (they hold source file paths) so that the file
    only depends on the tool versions, not on where the script was run."""
    m = onnx.load(str(path))
    m.doc_string = ""
    for node in m.graph.node:
        node.doc_string = ""
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def run_ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    out = sess.run(None, {n: feeds[n] for n in names})
    for o in out:
        if not np.all(np.isfinite(o)):
            raise SystemExit(f"{path.name}: non-finite output")
    return out


# ----------------------------------------------------------------------------
# onnxruntime's transformer optimizer


def ort_optimize(src: Path, dst: Path, gelu_approximation: bool) -> None:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    opts = FusionOptions("bert")
    opts.enable_gelu_approximation = gelu_approximation
    model = optimize_model(
        str(src),
        model_type="bert",
        num_heads=HEADS,
        hidden_size=HIDDEN,
        optimization_options=opts,
        opt_level=0,  # python fusions only: no onnxruntime graph rewrite, no file path dependence
        use_gpu=False,
        only_onnxruntime=False,
    )
    model.save_model_to_file(str(dst))
    normalise(dst)


# ----------------------------------------------------------------------------
# report


def op_histogram(path: Path) -> dict[str, int]:
    m = onnx.load(str(path))
    hist = collections.Counter()

    def walk(g):
        for n in g.node:
            key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
            hist[key] += 1
            for a in n.attribute:
                if a.g is not None and a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(m.graph)
    return dict(sorted(hist.items()))


def describe(path: Path) -> str:
    m = onnx.load(str(path))
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in m.opset_import)
    hist = op_histogram(path)

    def io(vals):
        out = []
        for v in vals:
            t = v.type.tensor_type
            dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
            out.append(
                f"`{v.name}` {onnx.TensorProto.DataType.Name(t.elem_type).lower()}[{', '.join(dims)}]"
            )
        return ", ".join(out)

    lines = [
        f"### `{path.name}`",
        "",
        f"- size: {path.stat().st_size} bytes; sha256 `{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}`",
        f"- opsets: {opsets}; ir_version {m.ir_version}",
        f"- inputs: {io(m.graph.input)}",
        f"- outputs: {io(m.graph.output)}",
        f"- initializers: {len(m.graph.initializer)}; nodes: {sum(hist.values())}",
        "- ops: " + ", ".join(f"{k} {v}" for k, v in hist.items()),
        "",
    ]
    return "\n".join(lines)


README_HEAD = """# Tiny ONNX model fixtures

Generated by `python examples/export_fixtures.py` (run from the repository root);
do not edit by hand: re-run the script instead. The test-suite needs no torch:
it only reads these files (see `tests/test_fixtures_ort.py`).

Tools used to make them (not project dependencies):

{versions}

## What they are

All models are tiny, randomly initialised Hugging Face models (seeded with
`torch.manual_seed`, then every parameter, LayerNorm gains and all biases
included, perturbed by seeded N(0, {noise}) noise so that every op matters),
in eval mode with attention implementation `eager`, exported with the
TorchScript exporter (`torch.onnx.export(..., dynamo=False,
do_constant_folding=True)`) from batch-2, sequence-16 int64 inputs whose
second row is padded after 10 tokens. Every input and output has dynamic axes
`batch` (0) and `sequence` (1).

Common shape: hidden {hidden}, {layers} layers, {heads} heads, intermediate
{inter}, max_position_embeddings {maxpos}, vocab_size {vocab}.

| file | model | notes |
| --- | --- | --- |
| `bert_qa_opset14.onnx` | `BertForQuestionAnswering` | LayerNorm decomposed (ReduceMean/Sub/Pow/Sqrt/Div), exact erf GELU |
| `bert_qa_opset17.onnx` | same weights | native `LayerNormalization` |
| `bert_qa_opset18.onnx` | same weights | same graph as opset 17 (no op whose signature changed in 18 appears); only the opset import differs |
| `distilbert_qa_opset14.onnx` | `DistilBertForQuestionAnswering` | inputs `input_ids`, `attention_mask`; mask via `Equal`/`Where` (masked_fill) |
| `roberta_qa_opset17.onnx` | `RobertaForQuestionAnswering` | inputs `input_ids`, `attention_mask`; pad id 1, position ids from input ids (`Not`/`Equal`, `CumSum`), type_vocab_size 1 |
| `albert_qa_opset17.onnx` | `AlbertForQuestionAnswering` | embedding_size 16 projected to hidden 32, one layer group shared by the 2 layers, `gelu_new` (tanh) |
| `minilm_encoder_opset17.onnx` | `BertModel` (no pooler) | output `last_hidden_state` [batch, sequence, 32]; `hidden_act="gelu_new"` (tanh GELU) |
| `bert_qa_ort_optimized.onnx` | `bert_qa_opset14.onnx` through `onnxruntime.transformers.optimizer.optimize_model(model_type="bert", num_heads={heads}, hidden_size={hidden}, opt_level=0)` | com.microsoft `EmbedLayerNormalization`, `Attention` (packed QKV weight [32, 96]), `SkipLayerNormalization`, `BiasGelu`; the mask reaches `Attention` as EmbedLayerNormalization's 1-D `mask_index` (per-row count of ones), so it equals the original model only for right-padded masks |
| `bert_qa_ort_fastgelu.onnx` | same, with `FusionOptions.enable_gelu_approximation = True` | `FastGelu` (tanh approximation, with bias) in place of `BiasGelu`; differs from the exact model by about 1e-5 on the fixture inputs |
| `tiny-bert-tokenizer.json` | `tokenizers` WordPiece | see below |

Token ids: `[CLS]`=0, `[PAD]`=1, `[SEP]`=2, `[UNK]`=3, `[MASK]`=4 for every model,
i.e. RoBERTa's layout (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3). All configs
use `pad_token_id=1` (BERT-style models ignore it at inference; RoBERTa derives
its position ids from it: `position = cumsum(ids != 1) * (ids != 1) + 1`, so a
RoBERTa input of length n uses positions 2..n+1 and sequences up to 62 tokens
fit in its 64 positions). The ORT-optimized models take int64 inputs like the
originals (the fused ops read them through int32 `Cast`s).

## What the exported graphs look like

- Linear layers are `MatMul` by a constant-folded, pre-transposed weight
  initializer followed by `Add` of the bias (no `Gemm`: the inputs are 3-D).
  The QA head is one `MatMul`+`Add` to 2 channels, then `Split` (split sizes
  as an input) and two `Squeeze` (axes as an input) to `start_logits`/`end_logits`.
- Attention (eager): Q/K/V `Reshape` to [batch, -1, 4, 8] with shapes built by
  `Shape`/`Gather`/`Unsqueeze`/`Concat`, `Transpose` perm [0,2,1,3] (K directly
  with perm [0,2,3,1]), `MatMul`, `Div` by sqrt(8) = 2.828427 (DistilBERT
  divides Q before the `MatMul` instead), mask, `Softmax(axis=-1)`, `MatMul`,
  `Transpose`, `Reshape` back to [batch, seq, 32].
- Attention mask, BERT / RoBERTa / ALBERT / MiniLM: computed once,
  `Unsqueeze(1)`, `Unsqueeze(2)`, `Cast` to float, `Sub(1.0, m)`,
  `Mul(-3.4028235e38)` (torch.finfo(float32).min, not -10000), then `Add`ed to
  the scores of every layer. DistilBERT: per layer `Equal(mask, 0)` (shared),
  `Reshape` [batch,1,1,seq], `Expand` to the scores shape, `Cast` to bool (a
  no-op), `Where(m, -3.4028235e38, scores)`.
- Position ids: BERT, DistilBERT, ALBERT, MiniLM `Slice` a constant [1, 64]
  int64 arange (the `position_ids` buffer, as a `Constant` node) to the
  sequence length and `Gather` the position table ([1, seq, 32], broadcast in
  the `Add`). RoBERTa: `Equal(ids, 1)`, `Not`, `Cast` int32, `CumSum(axis 1)`,
  `Mul`, `Cast` int64, `Add 1`; and its token type ids come from a constant
  zero buffer, `Slice`d and `Expand`ed to [batch, seq] with the shape built by
  `ConstantOfShape`/`Equal`/`Where` (the TorchScript `expand(-1, ...)` idiom).
- LayerNorm: opset 14 decomposes it into `ReduceMean`/`Sub`/`Pow 2`/`ReduceMean`/
  `Add eps`/`Sqrt`/`Div`/`Mul`/`Add`; opset >= 17 uses `LayerNormalization`
  (axis -1, epsilon 1e-12).
- GELU: `gelu` is the erf form `Div(x, 1.4142135)`, `Erf`, `Add 1`, `Mul x`,
  `Mul 0.5`; `gelu_new` (ALBERT, MiniLM) is the tanh form `Mul(x, 0.5)`,
  `Pow(x, 3)`, `Mul 0.044715`, `Add x`, `Mul 0.7978846`, `Tanh`, `Add 1`, `Mul`.
- ALBERT: the shared layer is exported twice (once per use); the biases refer
  to the same initializers, while the pre-transposed weights of the second use
  are `Identity` nodes of the first use's (6 `Identity` at the top of the graph).
- ORT-optimized: the int64 inputs are `Cast` to int32; `EmbedLayerNormalization`
  (word, position, segment tables, LayerNorm, and the mask) also outputs a 1-D
  int32 `mask_index`, the per-row count of ones, which is the 4th input of both
  `Attention` nodes (`num_heads` 4, `mask_filter_value` -3.4028235e38, packed QKV
  weight [32, 96] and bias [96]). `SkipLayerNormalization` takes (x, skip,
  gamma, beta, bias), `BiasGelu`/`FastGelu` take (x, bias).

## Tokenizer

`tiny-bert-tokenizer.json`: `tokenizers` WordPiece (`unk_token="[UNK]"`,
`##` continuation prefix) with a `BertNormalizer` (lower-casing, accents kept),
`BertPreTokenizer`, `TemplateProcessing` single `[CLS] $A [SEP]`, pair
`[CLS] $A [SEP] $B:1 [SEP]:1` (type ids 0 for the question part, 1 for the
context part) and a WordPiece decoder. Its {vocab} tokens: the 5 special
tokens, the 26 ASCII lowercase letters, 10 digits and 32 punctuation marks,
the same 68 characters as `##` continuations, then frequent English words,
so every id it yields is below every model's vocab_size (RoBERTa uses it as
well: it only needs ids within its vocabulary and pad id 1).

## Files

"""


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(OUT_DIR / "tiny-bert-tokenizer.json")
    assert tok.get_vocab_size() == VOCAB_SIZE

    feeds = {}
    for spec in EXPORTS:
        feeds[spec[0]] = export(*spec)
        print(f"exported {spec[0]}", file=sys.stderr)

    src = OUT_DIR / "bert_qa_opset14.onnx"
    ort_optimize(src, OUT_DIR / "bert_qa_ort_optimized.onnx", gelu_approximation=False)
    ort_optimize(src, OUT_DIR / "bert_qa_ort_fastgelu.onnx", gelu_approximation=True)
    base = run_ort(src, feeds["bert_qa_opset14.onnx"])
    for name, tol in (("bert_qa_ort_optimized.onnx", 1e-4), ("bert_qa_ort_fastgelu.onnx", 1e-2)):
        got = run_ort(OUT_DIR / name, feeds["bert_qa_opset14.onnx"])
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(base, got))
        print(f"{name}: max |diff| vs bert_qa_opset14.onnx = {err:.3g}", file=sys.stderr)
        if err > tol:
            raise SystemExit(f"{name} differs from the unoptimized model by {err}")

    onnx_files = [s[0] for s in EXPORTS] + [
        "bert_qa_ort_optimized.onnx",
        "bert_qa_ort_fastgelu.onnx",
    ]
    hists = {n: op_histogram(OUT_DIR / n) for n in onnx_files}
    fused = set().union(*hists.values())
    for op in (
        "Attention",
        "SkipLayerNormalization",
        "EmbedLayerNormalization",
        "BiasGelu",
        "FastGelu",
    ):
        if f"com.microsoft.{op}" not in fused:
            raise SystemExit(f"no fixture contains com.microsoft {op}")

    import tokenizers

    versions = "\n".join(
        f"- {k} {v}"
        for k, v in [
            ("python", sys.version.split()[0]),
            ("torch", torch.__version__),
            ("transformers", transformers.__version__),
            ("onnx", onnx.__version__),
            ("onnxruntime", ort.__version__),
            ("tokenizers", tokenizers.__version__),
            ("numpy", np.__version__),
        ]
    )
    readme = README_HEAD.format(
        versions=versions,
        noise=NOISE_STD,
        hidden=HIDDEN,
        layers=LAYERS,
        heads=HEADS,
        inter=INTERMEDIATE,
        maxpos=MAX_POS,
        vocab=VOCAB_SIZE,
    )
    total = 0
    for n in onnx_files + ["tiny-bert-tokenizer.json"]:
        p = OUT_DIR / n
        total += p.stat().st_size
        if n.endswith(".onnx"):
            readme += describe(p) + "\n"
        else:
            readme += f"### `{n}`\n\n- size: {p.stat().st_size} bytes\n\n"
    readme += f"Total: {total} bytes.\n"
    (OUT_DIR / "README.md").write_text(readme)
    for n in onnx_files:
        print(f"{n}: {(OUT_DIR / n).stat().st_size} bytes  {hists[n]}")
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
