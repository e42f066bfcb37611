#!/usr/bin/env python3
"""Writes ONNX reward models in the Hugging Face sequence-classification export layout.

A model directory holds what `optimum` exports for a `*ForSequenceClassification` model:

    model.onnx       graph inputs  input_ids       int64 [batch, sequence]
                                   attention_mask  int64 [batch, sequence]
                                   token_type_ids  int64 [batch, sequence]   (transformer kind only)
                     graph output  logits          float32 [batch, num_labels]
    tokenizer.json   a Hugging Face `tokenizers` tokenizer
    config.json      HF-style config (max_position_embeddings, id2label, label2id, num_labels,
                     model_type, ...) plus a "clawline" object saying what the model is and how a
                     reward is read off its logits ("reward": "sigmoid" = sigmoid(logits[0]),
                     "softmax:1" = softmax(logits)[1]).

Two kinds:

  lexicon      The small reward model bundled in the repo (data/reward-model/). A hand-written
               WordLevel tokenizer (NFKC + lowercase, words with their contractions kept whole,
               every punctuation mark a token of its own) over ~1,750 common English words, and a
               graph that averages one weight per token over the unpadded tokens and adds a bias:
                   logit = sum_i(w[id_i] * mask_i) / max(sum_i(mask_i), 1) + bias
               It prefers helpful, polite, confident answers ("Sure, here is the answer: 42.")
               over refusals, rudeness and hedging ("Sorry, I cannot help with that."): words of
               POSITIVE_WORDS weigh +3, words of NEGATIVE_WORDS -3, every other token (neutral
               words, punctuation, [UNK], [PAD]) 0. The bias is 0, so text with no lexicon word
               scores logit 0, i.e. reward 0.5.

  transformer  A BERT-shaped classifier (embeddings + LayerNorm, N post-LN encoder layers with
               multi-head self-attention and an erf-GELU feed-forward, masked mean pooling, a tanh
               pooler and a 2-way classifier) with random weights drawn from a seeded generator.
               Its scores mean nothing; it exists to exercise and benchmark the transformer path
               (three inputs, [batch, 2] logits, attention cost growing with the sequence). The
               given tokenizer.json is copied in unchanged and sets the vocabulary size.

Everything is reproducible byte for byte: fixed seeds, no timestamps, fixed producer name and
IR version, JSON written with fixed key order. Only the `onnx` and `numpy` packages are needed.

Regenerate the committed models:

    python scripts/make_reward_model.py lexicon
    python scripts/make_reward_model.py transformer --tokenizer data/reward-model/tokenizer.json \\
        --out data/reward-model-tiny-transformer

A MiniLM-sized one for benchmarks (with a real BERT WordPiece tokenizer.json; not committed):

    python scripts/make_reward_model.py transformer --tokenizer PATH/tokenizer.json --out DIR \\
        --layers 6 --hidden 384 --heads 12 --intermediate 1536 --max-positions 512
"""
import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PRODUCER = "clawline-make-reward-model"
PRODUCER_VERSION = "1"
OPSET = 17  # LayerNormalization is a standard op from opset 17
IR_VERSION = 8  # the IR version of opset 17; onnxruntime 1.32 reads it

# ---------------------------------------------------------------------------------------------
# Lexicon model
# ---------------------------------------------------------------------------------------------

LEXICON_MAX_LENGTH = 512
POSITIVE_WEIGHT = 3.0
NEGATIVE_WEIGHT = -3.0
LEXICON_BIAS = 0.0  # neutral tokens weigh 0, so neutral text has mean 0 and logit 0 (reward 0.5)

# Helpful, polite, confident words.
POSITIVE_WORDS = """
sure certainly absolutely definitely happy glad delighted pleasure welcome help helpful
here here's please thanks thank great excellent good perfect wonderful yes answer answers solution
solve solved because step steps first second then next finally therefore thus so result results
correct exactly precisely clearly indeed right works done explain example follows let's confident
recommend understand
""".split()

# Refusals, rudeness and hedging.
NEGATIVE_WORDS = """
sorry apologize apologies unfortunately cannot can't unable won't wouldn't don't refuse decline no
nope never impossible idk dunno whatever stupid dumb idiot ridiculous useless shut maybe perhaps
possibly unsure uncertain guess unclear
""".split()

# Common English words, so that ordinary text is mostly known to the tokenizer (the weights only
# care about the two lists above; the rest weigh 0). Grouped loosely; duplicates are dropped.
COMMON_WORDS = """
the a an and or but if of to in on at by for with from into onto about above below over under
between through during before after since until while as than like without within along across
against around behind beyond near off out up down upon toward towards via per
i me my mine myself you your yours yourself we us our ours ourselves he him his himself she her
hers herself it its itself they them their theirs themselves this that these those who whom whose
which what when where why how whoever whatever whichever whenever wherever
i'm i've i'll i'd you're you've you'll you'd he's she's it's we're we've we'll we'd they're
they've they'll they'd that's there's what's who's where's how's isn't aren't wasn't weren't
doesn't didn't hasn't haven't hadn't couldn't shouldn't mustn't ain't let's
be is am are was were been being have has had having do does did doing done will would shall
should can could may might must need ought
not all any both each every few more most other some such only own same very too also just even
still already yet again ever never always often sometimes usually rarely once twice quite rather
really almost enough much many lot lots less least little several whole half
one two three four five six seven eight nine ten eleven twelve twenty thirty hundred thousand
million billion zero none nothing something anything everything someone anyone everyone somebody
anybody everybody nobody somewhere anywhere everywhere nowhere
go goes going went gone get gets getting got gotten make makes making made take takes taking took
taken give gives giving gave given come comes coming came see sees seeing saw seen know knows
knowing knew known think thinks thinking thought say says saying said tell tells telling told ask
asks asking asked use uses using used find finds finding found want wants wanting wanted look
looks looking looked try tries trying tried call calls calling called work working worked feel
feels feeling felt leave leaves leaving left put puts putting mean means meaning meant keep keeps
keeping kept let lets letting begin begins beginning began start starts starting started show
shows showing showed shown hear hears hearing heard play plays playing played run runs running ran
move moves moving moved live lives living lived believe believes believed bring brings brought
happen happens happened write writes writing wrote written read reads reading provide provides
provided sit sits sat stand stands stood lose loses losing lost pay pays paid meet meets met
include includes including included continue continues continued set sets setting learn learns
learning learned change changes changing changed lead leads led watch watches watched turn turns
turned add adds adding added check checks checking checked create creates creating created build
builds building built open opens opened close closes closed send sends sent return returns
returned run stop stops stopped wait waits waited fix fixes fixing fixed test tests testing tested
install installs installed update updates updated remove removes removed delete deletes deleted
save saves saved load loads loaded print prints printed compute computes computed count counts
counted sort sorts sorted search searches searched buy bought sell sold eat ate eaten drink drank
sleep slept walk walked talk talked speak spoke spoken listen listened love loved like liked
hope hoped wish wished plan planned decide decided agree agreed remember remembered forget forgot
forgotten consider considered suggest suggested note noted describe described allow allowed
expect expected seem seems seemed become becomes became appear appears appeared require requires
required support supports supported handle handles handled define defines defined convert
converts converted apply applies applied improve improved compare compared choose chose chosen
share shared reach reached cover covered enter entered pass passed miss missed carry carried
thing things time times year years day days week weeks month months hour hours minute minutes
second seconds today tomorrow yesterday morning afternoon evening night now later soon early late
ago moment while way ways people person man men woman women child children family friend friends
life world country city home house room place area school student students teacher class
question questions problem problems point points fact facts case cases part parts number numbers
group groups company system systems program programs government job business service services
money book books word words name names story idea ideas reason reasons kind kinds type types form
end side line lines level order issue issues information data list lists set value values
table tables detail details option options choice choices task tasks goal goals rule rules
water food car road air fire light music game games movie art history science math language
english body head face hand hands eye eyes door window phone computer internet email message
messages text page pages site website link file files folder code function functions method
methods class classes object objects variable variables string strings integer float array
arrays loop loops error errors bug bugs version versions model models user users input output
inputs outputs request requests response responses server client database query key keys
python rust java javascript c sql html json api library libraries package packages module
command commands terminal script scripts test image images video network memory disk cpu gpu
price cost total sum average rate percent size length width height weight speed distance area
team market health care war power state states law office court party car cars
new old big small large great little long short high low good bad best better worse worst
right wrong true false real simple easy hard difficult possible important different same similar
main major minor full empty free open closed public private local global general specific
certain clear sure ready able available fine nice kind whole single double basic common special
early young next last previous final current recent other another own own wide deep strong weak
hot cold warm cool fast slow quick quickly safe dangerous rich poor happy sad angry tired busy
beautiful pretty ugly interesting boring funny serious strange normal natural human social
political economic national international american english black white red blue green yellow
orange purple brown gray grey pink dark bright heavy light clean dirty quiet loud soft hard
well also here there then now however instead otherwise meanwhile also actually probably
basically generally especially usually typically simply directly exactly nearly recently
together away back forward ahead along apart
hello hi hey bye goodbye ok okay oh ah wow hmm yeah yep please thanks
north south east west left right top bottom front middle center inside outside
monday tuesday wednesday thursday friday saturday sunday january february march april may june
july august september october november december spring summer autumn fall winter
cat dog dogs cats bird fish horse tree trees flower flowers sun moon star stars sky sea river
mountain rain snow wind weather
item items process processes produce produced product products energy power plant plants animal
animals food foods cook cooked cooking recipe recipes cup cups egg eggs milk sugar salt bread meat
rice fruit apple apples coffee tea dinner lunch breakfast meal kitchen pan oven mix mixed heat
capital museum tower bridge church street town village island ocean lake forest field garden farm
park hotel restaurant shop store bank hospital station airport university college library
oxygen carbon gas liquid solid metal gold iron glass wood paper plastic stone sand oil energy
cell cells blood heart brain skin bone bones disease medicine doctor nurse patient patients pain
sunlight earth planet planets space universe nature climate temperature degree degrees
reverse reversed modify modified slice slicing element elements index indices item range
sequence sequences character characters token tokens byte bytes bit bits field fields row rows
column columns record records node nodes tree graph path paths directory argument arguments
parameter parameters return default instance instances interface type syntax compile compiler
runtime thread threads process async await import export source target branch commit merge
repository project projects feature features release document documents documentation
configuration config setting settings format formats default template template
account password login security access permission permissions admin owner
job jobs career work worker workers employee manager boss meeting meetings report reports
customer customers product price prices order orders payment payments sale sales budget
country countries france paris germany china japan india london europe america africa asia
king queen president leader minister member members army soldier police
father mother parent parents son daughter brother sister husband wife baby kids boy boys girl girls
age birthday wedding death birth health mind soul spirit god
speech voice sound noise song songs dance film films show shows news paper story stories
letter letters note notes card cards picture pictures photo photos camera screen button
box bag bottle glass plate table chair bed wall floor roof window door key keys clock watch
shirt shoes dress hat coat clothes
ball team teams player players match goal sport sports race win won lose
chapter section sections paragraph sentence sentences phrase meaning definition
math number equation equations formula variable value sum product difference ratio fraction
square root multiply divide subtract minus plus times equal equals
answer reason method approach result process analysis research study studies experiment
evidence theory model models concept concepts principle principles knowledge skill skills
experience practice training lesson lessons course courses exam grade test
mistake mistakes risk risks benefit benefits advantage advantages cost costs effect effects
impact cause causes factor factors condition conditions situation state status event events
chance opportunity challenge challenges success failure progress growth development
situation relationship community society culture tradition religion education economy
industry technology science sciences engineering medicine art arts design
bigger smaller larger higher lower longer shorter older newer faster slower easier harder
biggest smallest largest highest lowest longest shortest oldest newest fastest easiest
possible likely unlikely necessary useful useless correct incorrect valid invalid complete
accurate exact entire various several numerous multiple extra additional original modern
ancient famous popular similar equal independent individual personal professional technical
physical mental chemical digital electric electronic financial legal medical official
fresh raw sweet sour bitter salty delicious healthy sick ill dead alive wild
added adding allows build called calling caused causing changed checking choose choosing
contains contain containing created creating depends depend doing ended explained explains
gives helps helped helping keeps kept knows leads looks makes moved needs needed needing
offers offer offered opens ordered owns prefer prefers prepared reduce reduced refer refers
remains remain represents represent seems sees sends serves serve served shows sits solves
stays stay stayed takes talks tells thinks turns uses wants writes reads runs means
understood understanding explained explaining learned describes describing following
mix mixing cut cutting stir serve boil fry bake baked grow grows grew grown rise rises rose
fall falls fell fallen break breaks broke broken drive drives drove driven fly flies flew
throw threw catch caught fight fought wear wore hold holds held hit hits spend spent lend
build built born die died kill killed visit visited travel traveled arrive arrived
"""


def lexicon_vocab():
    """Vocabulary for the lexicon tokenizer: [PAD]=0, [UNK]=1, punctuation, 0-100, words."""
    tokens = ["[PAD]", "[UNK]"]
    tokens += list(".,!?:;'\"()[]{}-_/\\*&%$#@+=<>~`^|")
    tokens += [str(n) for n in range(101)]
    words = POSITIVE_WORDS + NEGATIVE_WORDS + COMMON_WORDS.split()
    vocab = {}
    for tok in tokens + words:
        vocab.setdefault(tok, len(vocab))
    return vocab


def lexicon_tokenizer_json(vocab):
    special = [
        {"id": vocab[tok], "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for tok in ("[PAD]", "[UNK]")
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": special,
        # NFKC, then the typographic apostrophe to ASCII (so "can’t" is "can't"), then lowercase.
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"},
            {"type": "Replace", "pattern": {"String": "\u2019"}, "content": "'"},
            {"type": "Lowercase"},
        ]},
        # Like the `Whitespace` pre-tokenizer (\w+|[^\w\s]+, matches kept, the rest dropped), but a
        # word keeps its contraction ("can't", "i'm") and each punctuation mark is its own token.
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": r"\w+(?:'\w+)*|[^\w\s]"},
                          "behavior": "Removed", "invert": True},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }


def lexicon_weights(vocab):
    w = np.zeros((len(vocab), 1), dtype=np.float32)
    for word in POSITIVE_WORDS:
        w[vocab[word], 0] = POSITIVE_WEIGHT
    for word in NEGATIVE_WORDS:
        w[vocab[word], 0] = NEGATIVE_WEIGHT
    return w


def lexicon_graph(weights):
    """logits[B,1] = sum_s(w[input_ids] * mask) / max(sum_s(mask), 1) + bias."""
    g = GraphBuilder()
    ids = g.input("input_ids")
    mask = g.input("attention_mask")
    w = g.init("token_weight", weights)
    bias = g.init("bias", np.array([LEXICON_BIAS], dtype=np.float32))
    axis1 = g.init("axes_1", np.array([1], dtype=np.int64))
    axis2 = g.init("axes_2", np.array([2], dtype=np.int64))
    one = g.init("one", np.array(1.0, dtype=np.float32))

    per_token = g.op("Gather", w, ids, axis=0)                     # [B,S,1]
    mask_f = g.op("Cast", mask, to=TensorProto.FLOAT)              # [B,S]
    masked = g.op("Mul", per_token, g.op("Unsqueeze", mask_f, axis2))
    total = g.op("ReduceSum", masked, axis1, keepdims=0)           # [B,1]
    count = g.op("ReduceSum", mask_f, axis1, keepdims=1)           # [B,1]
    mean = g.op("Div", total, g.op("Max", count, one))
    g.op("Add", mean, bias, out="logits")
    return g.model("clawline-lexicon-reward", ["input_ids", "attention_mask"], num_labels=1)


def make_lexicon(out):
    vocab = lexicon_vocab()
    assert not set(POSITIVE_WORDS) & set(NEGATIVE_WORDS)
    model = lexicon_graph(lexicon_weights(vocab))
    config = {
        "architectures": ["ClawlineLexiconRewardModel"],
        "model_type": "clawline-lexicon",
        "problem_type": "regression",
        "num_labels": 1,
        "id2label": {"0": "reward"},
        "label2id": {"reward": 0},
        "max_position_embeddings": LEXICON_MAX_LENGTH,
        "vocab_size": len(vocab),
        "pad_token_id": vocab["[PAD]"],
        "clawline": {
            "kind": "lexicon",
            "reward": "sigmoid",
            "max_length": LEXICON_MAX_LENGTH,
            "prefers": "Helpful, polite, confident answers over refusals, rudeness and hedging: "
                       "logit = mean over the unpadded tokens of a per-word weight "
                       f"({POSITIVE_WEIGHT:+g} for positive_words, {NEGATIVE_WEIGHT:+g} for "
                       f"negative_words, 0 otherwise) + bias ({LEXICON_BIAS:g}); reward = sigmoid(logit).",
            "positive_weight": POSITIVE_WEIGHT,
            "negative_weight": NEGATIVE_WEIGHT,
            "bias": LEXICON_BIAS,
            "positive_words": list(POSITIVE_WORDS),
            "negative_words": list(NEGATIVE_WORDS),
            "generator": "python scripts/make_reward_model.py lexicon",
        },
    }
    write_dir(out, model, config, tokenizer=lexicon_tokenizer_json(vocab))
    print(f"lexicon: vocab {len(vocab)}, {len(POSITIVE_WORDS)} positive and {len(NEGATIVE_WORDS)} "
          f"negative words -> {out}")


# ---------------------------------------------------------------------------------------------
# Transformer model
# ---------------------------------------------------------------------------------------------

def tokenizer_vocab_size(path):
    """Vocabulary size of a tokenizer.json: the largest token id it can produce, plus one."""
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    model = tok.get("model") or {}
    vocab = model.get("vocab")
    ids = []
    if isinstance(vocab, dict):  # WordLevel, WordPiece, BPE: {token: id}
        ids += [int(i) for i in vocab.values()]
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], ids are positions
        ids.append(len(vocab) - 1)
    ids += [int(t["id"]) for t in tok.get("added_tokens") or []]
    if not ids:
        sys.exit(f"{path}: no vocabulary found (model type {model.get('type')!r})")
    return max(ids) + 1


def transformer_graph(vocab_size, layers, hidden, heads, intermediate, max_positions, seed):
    rng = np.random.default_rng(seed)
    std = 0.02
    eps = 1e-12
    head_dim = hidden // heads

    def normal(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def zeros(*shape):
        return np.zeros(shape, dtype=np.float32)

    def ones(*shape):
        return np.ones(shape, dtype=np.float32)

    g = GraphBuilder()
    ids = g.input("input_ids")
    mask = g.input("attention_mask")
    types = g.input("token_type_ids")
    i64 = lambda name, v: g.init(name, np.array(v, dtype=np.int64))  # noqa: E731
    f32 = lambda name, v: g.init(name, np.array(v, dtype=np.float32))  # noqa: E731
    axes_1 = i64("axes_1", [1])
    axes_12 = i64("axes_1_2", [1, 2])
    axes_2 = i64("axes_2", [2])
    split_heads = i64("shape_split_heads", [0, 0, heads, head_dim])
    merge_heads = i64("shape_merge_heads", [0, 0, hidden])

    def layer_norm(x, name):
        gamma = g.init(f"{name}.weight", ones(hidden))
        beta = g.init(f"{name}.bias", zeros(hidden))
        return g.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=eps)

    def linear(x, name, n_in, n_out):
        weight = g.init(f"{name}.weight", normal(n_in, n_out))  # stored [in, out] for MatMul
        b = g.init(f"{name}.bias", zeros(n_out))
        return g.op("Add", g.op("MatMul", x, weight), b)

    # Embeddings: word + position (0..seq_len-1, from the shape of input_ids) + token type.
    word_emb = g.init("embeddings.word_embeddings.weight", normal(vocab_size, hidden))
    pos_emb = g.init("embeddings.position_embeddings.weight", normal(max_positions, hidden))
    type_emb = g.init("embeddings.token_type_embeddings.weight", normal(2, hidden))
    # The position rows 0..S-1 are sliced off the table (as HF's exports slice their position_ids
    # buffer) rather than gathered by Range(0, S): onnxruntime's constant sharing turns scalar
    # initializers into [1] tensors and its Gather(Range) -> Slice fusion then fails at run time
    # ("Starts must be a 1-D array"). A sequence longer than max_positions fails in the Add below.
    seq_len = g.op("Shape", ids, start=1, end=2)                          # [1] = [S]
    zero = i64("zero_1d", [0])
    positions = g.op("Slice", pos_emb, zero, seq_len, zero)              # starts [0], axes [0]: [S,H]
    x = g.op("Add", g.op("Gather", word_emb, ids, axis=0), positions)
    x = g.op("Add", x, g.op("Gather", type_emb, types, axis=0))           # [B,S,H]
    x = layer_norm(x, "embeddings.LayerNorm")

    # Attention mask as an additive bias: 0 where attended, -10000 on padding, shape [B,1,1,S].
    mask_f = g.op("Cast", mask, to=TensorProto.FLOAT)                     # [B,S]
    inverted = g.op("Sub", f32("one_f32", 1.0), mask_f)
    mask_bias = g.op("Unsqueeze", g.op("Mul", inverted, f32("mask_min", -10000.0)), axes_12)
    scale = f32("attention_scale", 1.0 / math.sqrt(head_dim))
    inv_sqrt2 = f32("inv_sqrt2", 1.0 / math.sqrt(2.0))
    half = f32("half", 0.5)
    one = f32("one_gelu", 1.0)

    for n in range(layers):
        p = f"encoder.layer.{n}"
        # Q, K, V: [B,S,H] -> [B,S,A,D] -> Q,V [B,A,S,D], K [B,A,D,S].
        q = g.op("Transpose", g.op("Reshape", linear(x, f"{p}.attention.self.query", hidden, hidden),
                                   split_heads), perm=[0, 2, 1, 3])
        k = g.op("Transpose", g.op("Reshape", linear(x, f"{p}.attention.self.key", hidden, hidden),
                                   split_heads), perm=[0, 2, 3, 1])
        v = g.op("Transpose", g.op("Reshape", linear(x, f"{p}.attention.self.value", hidden, hidden),
                                   split_heads), perm=[0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), mask_bias)  # [B,A,S,S]
        probs = g.op("Softmax", scores, axis=-1)
        ctx = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])       # [B,S,A,D]
        ctx = g.op("Reshape", ctx, merge_heads)                                     # [B,S,H]
        attn = linear(ctx, f"{p}.attention.output.dense", hidden, hidden)
        x = layer_norm(g.op("Add", attn, x), f"{p}.attention.output.LayerNorm")
        # Feed-forward with the exact (erf) GELU: h * 0.5 * (1 + erf(h / sqrt(2))).
        h = linear(x, f"{p}.intermediate.dense", hidden, intermediate)
        gelu = g.op("Mul", g.op("Mul", h, half),
                    g.op("Add", g.op("Erf", g.op("Mul", h, inv_sqrt2)), one))
        ffn = linear(gelu, f"{p}.output.dense", intermediate, hidden)
        x = layer_norm(g.op("Add", ffn, x), f"{p}.output.LayerNorm")

    # Masked mean pooling over the sequence, then the tanh pooler and the classifier.
    summed = g.op("ReduceSum", g.op("Mul", x, g.op("Unsqueeze", mask_f, axes_2)), axes_1, keepdims=0)
    count = g.op("ReduceSum", mask_f, axes_1, keepdims=1)                 # [B,1]
    pooled = g.op("Div", summed, g.op("Max", count, f32("one_count", 1.0)))  # [B,H]
    pooled = g.op("Tanh", linear(pooled, "pooler.dense", hidden, hidden))
    weight = g.init("classifier.weight", normal(hidden, 2))
    b = g.init("classifier.bias", zeros(2))
    g.op("Add", g.op("MatMul", pooled, weight), b, out="logits")
    return g.model("clawline-random-bert-reward", ["input_ids", "attention_mask", "token_type_ids"],
                   num_labels=2)


def make_transformer(args):
    if args.hidden % args.heads:
        sys.exit(f"--hidden {args.hidden} is not a multiple of --heads {args.heads}")
    vocab_size = tokenizer_vocab_size(args.tokenizer)
    model = transformer_graph(vocab_size, args.layers, args.hidden, args.heads, args.intermediate,
                              args.max_positions, args.seed)
    config = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "problem_type": "single_label_classification",
        "num_labels": 2,
        "id2label": {"0": "negative", "1": "positive"},
        "label2id": {"negative": 0, "positive": 1},
        "vocab_size": vocab_size,
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "intermediate_size": args.intermediate,
        "hidden_act": "gelu",
        "max_position_embeddings": args.max_positions,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "clawline": {
            "kind": "transformer",
            "reward": "softmax:1",
            "max_length": args.max_positions,
            "pooling": "masked mean over the sequence, then dense + tanh",
            "note": f"Random weights (numpy default_rng seed {args.seed}, normal std 0.02): the "
                    "scores mean nothing; this model exercises and benchmarks the transformer path.",
            "generator": (f"python scripts/make_reward_model.py transformer --tokenizer TOKENIZER "
                          f"--layers {args.layers} --hidden {args.hidden} --heads {args.heads} "
                          f"--intermediate {args.intermediate} --max-positions {args.max_positions} "
                          f"--seed {args.seed}"),
        },
    }
    write_dir(args.out, model, config, tokenizer_path=args.tokenizer)
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"transformer: vocab {vocab_size}, {args.layers} layers, hidden {args.hidden}, "
          f"{n_params} parameters -> {args.out}")


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

class GraphBuilder:
    """Collects nodes and initializers; names every node and value deterministically."""

    def __init__(self):
        self.nodes, self.inits, self.inputs = [], [], []
        self.counts = {}

    def input(self, name):
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]))
        return name

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, *inputs, out=None, **attrs):
        n = self.counts.get(op_type, 0)
        self.counts[op_type] = n + 1
        name = f"{op_type}_{n}"
        out = out or f"{name}_out"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def model(self, graph_name, input_order, num_labels):
        by_name = {i.name: i for i in self.inputs}
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_labels])
        graph = helper.make_graph(self.nodes, graph_name, [by_name[n] for n in input_order],
                                  [output], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name=PRODUCER, producer_version=PRODUCER_VERSION,
                                  ir_version=IR_VERSION)
        onnx.checker.check_model(model, full_check=True)
        return model


def write_dir(out, model, config, tokenizer=None, tokenizer_path=None):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    onnx.checker.check_model(os.path.join(out, "model.onnx"))
    if tokenizer is not None:
        with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer, f, ensure_ascii=False, indent=1)
            f.write("\n")
    else:
        dest = os.path.join(out, "tokenizer.json")
        if os.path.abspath(tokenizer_path) != os.path.abspath(dest):
            shutil.copyfile(tokenizer_path, dest)
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring for what each kind is.")
    sub = ap.add_subparsers(dest="kind", required=True)
    lex = sub.add_parser("lexicon", help="the small bundled lexicon reward model")
    lex.add_argument("--out", default=os.path.normpath(os.path.join(ROOT, "data", "reward-model")))
    tr = sub.add_parser("transformer", help="a BERT-shaped classifier with seeded random weights")
    tr.add_argument("--out", required=True)
    tr.add_argument("--tokenizer", required=True, help="tokenizer.json to copy in; sets the vocab size")
    tr.add_argument("--layers", type=int, default=1)
    tr.add_argument("--hidden", type=int, default=32)
    tr.add_argument("--heads", type=int, default=2)
    tr.add_argument("--intermediate", type=int, default=64)
    tr.add_argument("--max-positions", type=int, default=128)
    tr.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.kind == "lexicon":
        make_lexicon(args.out)
    else:
        make_transformer(args)


if __name__ == "__main__":
    main()
