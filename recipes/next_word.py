"""Next-word prediction on English idioms with a two-level SharedRNN.

Every prefix of the ~200 built-in idioms gives one training pair ("feeling
under the" -> "weather"); `keras_seq.data.next_word_dataset` maps the words to
ids, and `Embedding(mask_zero=True) -> SharedRNN(128, depth=2) ->
Dense(softmax)` learns them with a GradientMonitor watching. Reports top-1
and top-5 accuracy on all pairs against the corpus ceiling (some prefixes
start several idioms: "a", "the", "bite the", so no model gets them all),
prints completions with their probabilities, and saves the model with its
vocabulary (`vocabulary.json`) for `keras-seq complete "once in a blue"`. On
TensorFlow the saved model reads raw text (a `TextVectorization` of that
vocabulary in front of the network of ids, so it loads only where
TensorFlow is installed); elsewhere it reads token ids.

Runtime: ~35 s on 2 CPU cores (--smoke: ~5 s).

    keras-seq run next_word [--epochs 40] [--units 128] [--seed 0]
    python recipes/next_word.py [same options]
"""

import collections
import sys

import keras

import keras_seq
from keras_seq import runs

NAME = "next_word"
PROMPTS = (
    "feeling under the",
    "break the",
    "once in a blue",
    "let the cat out of the",
    "the ball is in your",
    "kill two birds with one",
    "hit the nail on the",
    "bite the",  # two idioms: "bite the bullet" and "bite the dust"
)


def next_word_pairs(texts):
    """Every (prefix, next word) pair of every text, and the longest prefix
    in words."""
    prefixes, targets = [], []
    for text in texts:
        words = text.split()
        for k in range(1, len(words)):
            prefixes.append(" ".join(words[:k]))
            targets.append(words[k])
    return prefixes, targets, max(len(p.split()) for p in prefixes)


def ceilings(prefixes, targets):
    """The best top-1 and top-5 accuracy any model can reach on these pairs:
    a prefix that several texts share has only one best guess."""
    following = collections.defaultdict(collections.Counter)
    for prefix, target in zip(prefixes, targets):
        following[prefix][target] += 1

    def best(k):
        reachable = sum(sum(sorted(c.values())[-k:]) for c in following.values())
        return reachable / len(targets)

    return best(1), best(5), following


def text_model(model, vocabulary, max_words):
    """On TensorFlow, `model` behind a `TextVectorization` of `vocabulary`,
    so that the saved model reads raw text; `model` itself elsewhere
    (`TextVectorization` needs TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        return model
    vectorize = keras.layers.TextVectorization(
        standardize="lower",
        split="whitespace",
        output_sequence_length=max_words,
        vocabulary=vocabulary[2:],  # it adds "" and "[UNK]" itself
    )
    return keras_seq.Sequential(
        [keras.Input((1,), dtype="string"), vectorize, model], name="next_word_text"
    )


def main(argv=None):
    parser = runs.argument_parser(NAME, __doc__, epochs=40, batch_size=32)
    parser.add_argument(
        "--units",
        type=runs.positive_int,
        default=128,
        metavar="N",
        help="recurrent units (default: 128)",
    )
    args = parser.parse_args(argv)
    run = runs.start(NAME, args)

    idioms = keras_seq.data.load_idioms()
    if args.smoke:
        idioms, args.units = idioms[::8], min(args.units, 16)
    prefixes, targets, _ = next_word_pairs(idioms)  # as strings, for ceilings
    # Ids after the words, most frequent word first (0: padding, 1: unknown).
    x, y, vocabulary = keras_seq.data.next_word_dataset(idioms, padding="post")
    max_words = x.shape[1]
    print(
        f"{len(idioms)} idioms -> {len(y)} (prefix, next word) pairs, "
        f"{len(vocabulary)} words, prefixes padded to {max_words}"
    )

    model = keras_seq.Sequential(
        [
            keras.Input((max_words,), dtype="int32"),
            keras.layers.Embedding(
                len(vocabulary), 32, mask_zero=True, name="embedding"
            ),
            keras_seq.layers.SharedRNN(args.units, depth=2, name="rnn"),
            keras.layers.Dense(len(vocabulary), activation="softmax", name="words"),
        ],
        name="next_word",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
        ],
    )
    monitor = keras_seq.callbacks.GradientMonitor(log_dir=run.dir, every=5)
    model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        callbacks=[
            runs.tensorboard(run.dir),
            monitor,
            run.progress(every=5),
        ],
    )

    run.save(text_model(model, vocabulary, max_words), monitor, vocabulary=vocabulary)

    top1_ceiling, top5_ceiling, following = ceilings(prefixes, targets)
    loss, top1, top5 = model.evaluate(x, y, verbose=0)
    prompts = [p for p in PROMPTS if p in following] or prefixes[-3:]
    print("\nCompletions (top 3 with probabilities; the corpus's next words):")
    width = max(len(p) for p in prompts)
    hits = 0
    completed = {}  # prompt -> its top 3, for the closing commands
    for prompt in prompts:
        best = keras_seq.data.next_words(
            model, vocabulary, prompt, k=3, max_len=max_words, padding="post"
        )
        shown = ", ".join(f"{word} {probability:.2f}" for word, probability in best)
        completed[prompt] = shown
        expected = sorted(following[prompt])
        hits += best[0][0] in expected
        print(f"  {prompt:<{width}}  -> {shown:<40} ({' or '.join(expected)})")

    # The closing commands, as the README's quick start shows them.
    model_option = [] if args.log_dir is None else ["--model", run.dir]
    complete = runs.shell_command(
        "keras-seq", "complete", "once in a blue", *model_option
    )
    run.finish(
        {
            "pairs": len(y),
            "vocabulary": len(vocabulary),
            "epochs": args.epochs,
            "top1_accuracy": top1,
            "top1_ceiling": top1_ceiling,
            "top5_accuracy": top5,
            "top5_ceiling": top5_ceiling,
            "loss": loss,
            "prompts_completed": f"{hits}/{len(prompts)}",
        },
        notes=[
            f"Accuracy on all {len(y)} training pairs: the task is to memorise "
            "the corpus. The ceilings are what a perfect model reaches, as "
            "some prefixes start several idioms.",
        ],
        commands=[
            (complete, completed.get("once in a blue", "next words, best first")),
            runs.tensorboard_command(run.dir),
            (runs.shell_command("keras-seq", "list"), "the other recipes"),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
