"""The deep-ranking section of the report, built only from the run's JSON files."""

from __future__ import annotations

from neuralcodes.report.document import figure, table
from neuralcodes.runs import Run


def ranking_section(run: Run) -> str:
    """Markdown: implementation, similarity precision, retrieval, figures, measured improvements."""
    config = run.config()
    metrics = run.metrics()
    result = metrics.get("ranking")
    if result is None:
        raise ValueError(
            f"{run.root} has no ranking results: run `neuralcodes rank evaluate {run.root}` first"
        )
    out = [f"## Deep ranking (`{run.root.name}`)\n", _description(config)]

    sp, before = result["similarity_precision"], metrics.get("ranking_untrained", {})
    rows = [["trained (epoch %s)" % result.get("epochs_trained"), sp["train"], sp["test"]]]
    if before:
        rows.insert(
            0,
            [
                "untrained head",
                before["train_similarity_precision"],
                before["test_similarity_precision"],
            ],
        )
    out.append(
        f"### Similarity precision\n\nShare of {sp['n_triplets']:,} fixed, seeded triplets with "
        "D(q, p) < D(q, n): training triplets from the training set, test triplets from the official "
        "validation set (negatives uniformly from other classes).\n"
    )
    out.append(table(["model", "train triplets", "test triplets"], rows))

    r = result["retrieval"]
    out.append(
        f"### Retrieval\n\n{r['n_queries']:,} validation images query the {r['n_database']:,} embedded "
        "training images (full Euclidean ranking; relevant = same class).\n"
    )
    out.append(table(["mAP", "P@10", "P@30"], [[r["mAP"], r["P@10"], r["P@30"]]]))

    history = run.history()
    if history:
        out.append("\n" + _history_table(history))
    out.extend(_figure(path) for path in result.get("figures", []))
    out.append(_improvements(metrics.get("ranking_mining"), config))
    return "\n".join(out)


def _history_table(history: list[dict]) -> str:
    return table(
        ["epoch", "loss", "train sim. precision", "test sim. precision", "triplets/s"],
        [
            [
                h["epoch"],
                h["loss"],
                h["train_similarity_precision"],
                h["test_similarity_precision"],
                round(h["triplets_per_s"]),
            ]
            for h in history
        ],
    )


def _figure(path: str) -> str:
    caption = (
        "Validation queries (left), their 10 nearest and 10 farthest training images with distance and class; "
        "green frame = same class, red = other class"
        if "results" in path
        else "Triplet loss per iteration and per epoch; similarity precision per epoch"
    )
    return figure(path, caption)


def _description(config: dict) -> str:
    frozen = config.get("freeze_backbone", True)
    backbone = config["backbone"]
    text = (
        f"A simplified deep-ranking network (Wang et al., CVPR 2014) trained with triplets "
        f"(query, positive of the same class, negative of another class) and the hinge loss "
        f"max(0, g + D(q,p) - D(q,n)) with gap g = {config['gap']} and D the Euclidean distance. "
        f"The three branches are one shared embedding module. Its deep branch is `{backbone}`"
        + (" (ImageNet-pretrained)" if config.get("pretrained") else "")
        + (
            f", **frozen**: its pooled features for every image (inputs upsampled to {config['image_size']}x"
            f"{config['image_size']}) were computed once and cached, and only the head was trained"
            if frozen
            else ", trained end to end"
        )
        + "."
        + (
            " Two shallow branches (a conv and a max-pool each, on 4x and 8x down-sampled copies of the image) "
            "are L2-normalised and concatenated with the normalised deep features"
            if config.get("multiscale")
            else " The deep features are L2-normalised"
        )
        + (
            f", and a linear layer maps them to a {config['embedding_dim']}-d L2-normalised embedding. "
            if not config.get("head_hidden")
            else f", and a head with one hidden ReLU layer of {config['head_hidden']} units (the paper's head is linear) "
            f"maps them to a {config['embedding_dim']}-d L2-normalised embedding. "
        )
        + f"Training: {config['epochs']} epochs of {config['triplets_per_epoch']:,} random triplets "
        f"(seeded per epoch, saved with the run), {config['mining']} negatives (in-batch mining for semihard/hard), {config['optimizer']} "
        f"with learning rate {config['lr']}, batch {config['batch_size']}, seed {config['seed']}.\n"
    )
    if config.get("pretrained") and backbone == "efficientnet_lite0":
        text += (
            "\nNote: the ImageNet-1k weights have seen (other, larger images of) every Tiny ImageNet class, "
            "so these figures are not those of a model that never met the classes.\n"
        )
    return text


def _improvements(mining: dict | None, config: dict) -> str:
    head = "### A measured improvement: negative mining\n\n"
    if not mining:
        return head + (
            "No comparison was measured for this run (`neuralcodes rank compare-mining RUN` trains a head "
            "per mining strategy on the cached features).\n"
        )
    res = mining["results"]
    rows = [
        [
            name,
            v["train_similarity_precision"],
            v["test_similarity_precision"],
            v["mAP"],
            v["P@10"],
            v["P@30"],
        ]
        for name, v in res.items()
    ]
    best = max(res, key=lambda k: res[k]["mAP"])
    base = res.get("random")
    text = head + (
        f"Same data, seed and triplets; {mining['epochs']} epochs of {mining['triplets_per_epoch']:,} triplets per "
        f"strategy; negatives re-chosen inside each batch (pool = the batch's queries, positives and negatives). "
        f"mAP / P@k on {next(iter(res.values()))['n_queries']:,} validation queries.\n\n"
    )
    text += table(["negatives", "train sim. prec.", "test sim. prec.", "mAP", "P@10", "P@30"], rows)
    if base is not None and best != "random":
        text += (
            f"\n`{best}` negatives raise mAP from {base['mAP']:.4f} to {res[best]['mAP']:.4f} "
            f"(test similarity precision {base['test_similarity_precision']:.4f} -> "
            f"{res[best]['test_similarity_precision']:.4f}).\n"
        )
    elif base is not None:
        text += (
            "\nRandom negatives scored best here: mining did not help at this training length.\n"
        )
    gap = float(config.get("gap", 1.0))
    for name, v in res.items():
        if v.get("final_loss", 0.0) >= 0.99 * gap:
            text += (
                f"\n`{name}` negatives collapsed the embedding: the loss stayed at the gap ({v['final_loss']:.4f}), "
                "i.e. all codes moved together, as FaceNet warns for the hardest negatives from the start.\n"
            )
    return text
