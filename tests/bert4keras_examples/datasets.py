"""Tiny datasets in the exact file formats bert4keras' examples read, so every ported
example runs its own ``load_data`` unchanged. A handful of rows each: enough for one or two
training batches and a decode, nothing more."""
import json
import os

# Short Chinese sentences; every character in them is in the tiny vocabulary (conftest.py).
SENTENCES = [
    "科学技术是第一生产力。",
    "今天天气很好，我们去北京看长城。",
    "这家酒店的服务很好，房间也很干净。",
    "手机屏幕太小了，电池也不好用。",
    "张三在上海的大学学习语言模型。",
    "李四去了广州，他说那里的东西很好吃。",
    "这本书写得很好，我很喜欢。",
    "价格太贵了，质量也很差，不会再买。",
]
POSITIVE = [0, 1, 2, 4, 5, 6]  # label 1 in the sentiment data


def _write(path, text, encoding="utf-8"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding=encoding) as f:
        f.write(text)


def _lines(rows):
    return "".join(row + "\n" for row in rows)


def write_all(root):
    """Write every example's dataset under ``root`` (the examples' relative paths)."""
    s = SENTENCES
    # task_sentence_similarity_lcqmc: text1 \t text2 \t 0/1
    pairs = [f"{s[i]}\t{s[(i + k) % len(s)]}\t{int(k == 0)}" for i in range(len(s)) for k in (0, 3)]
    for split, rows in (("train", pairs[:4]), ("valid", pairs[4:6]), ("test", pairs[6:8])):
        _write(f"{root}/datasets/lcqmc/lcqmc.{split}.data", _lines(rows))
    # task_sentiment_albert, task_conditional_language_model: text \t 0/1
    labelled = [f"{t}\t{int(i in POSITIVE)}" for i, t in enumerate(s)]
    # both labels in valid: a constant prediction still scores > 0, so Evaluator saves
    splits = (("train", [0, 3]), ("valid", [1, 7, 2, 6]), ("test", [4]))
    for split, rows in ((name, [labelled[i] for i in ids]) for name, ids in splits):
        _write(f"{root}/datasets/sentiment/sentiment.{split}.data", _lines(rows))
    # task_sequence_labeling_ner_crf: "char tag" lines (B-/I- tags), blank line between sentences
    entities = {"北京": "LOC", "上海": "LOC", "广州": "LOC", "张三": "PER", "李四": "PER", "长城": "LOC"}
    sentences = []
    for text in s[:6]:
        tags = ["O"] * len(text)
        for name, kind in entities.items():
            start = text.find(name)
            if start >= 0:
                tags[start] = "B-" + kind
                for i in range(start + 1, start + len(name)):
                    tags[i] = "I-" + kind
        sentences.append("\n".join(f"{c} {t}" for c, t in zip(text, tags)))
    for split, rows in (("train", sentences[:4]), ("dev", sentences[4:5]), ("test", sentences[5:6])):
        _write(f"{root}/datasets/china-people-daily-ner-corpus/example.{split}", "\n\n".join(rows))
    # task_sequence_labeling_cws_crf: words separated by spaces
    words = ["科学 技术 是 第一 生产力 。", "今天 天气 很 好 ， 我们 去 北京 看 长城 。",
             "这 本 书 写 得 很 好 ， 我 很 喜欢 。", "张三 在 上海 的 大学 学习 语言 模型 。",
             "手机 屏幕 太 小 了 。"]
    _write(f"{root}/datasets/icwb2-data/training/pku_training.utf8", _lines(words))
    # task_seq2seq_autotitle_csl(_mt5): title \t content
    csl = [f"{t[:6]}\t{t}{s[(i + 1) % len(s)]}" for i, t in enumerate(s)]
    for split, rows in (("train", csl[:4]), ("val", csl[4:5]), ("test", csl[5:6])):
        _write(f"{root}/datasets/csl/{split}.tsv", _lines(rows))
    # reading comprehension / question generation: WebQA / SogouQA json
    # one passage per question: the examples pick a passage at random per sample, and the
    # training check wants the same batch every epoch (the tests pass several passages)
    qa = [
        ("科学技术是什么？", s[0], "第一生产力"),
        ("我们去哪里看长城？", s[1], "北京"),
        ("张三在哪里学习？", s[4], "上海"),
        ("李四去了哪里？", s[5], "广州"),
    ]
    webqa = [{"id": f"w{i}", "question": q, "passages": [{"passage": p, "answer": a}]}
             for i, (q, p, a) in enumerate(qa[:2])]
    sogou = [{"id": f"s{i}", "question": q, "passages": [{"passage": p, "answer": a}]}
             for i, (q, p, a) in enumerate(qa[2:])]
    _write(f"{root}/datasets/qa_datasets/WebQA.json", json.dumps(webqa, ensure_ascii=False))
    _write(f"{root}/datasets/qa_datasets/SogouQA.json", json.dumps(sogou, ensure_ascii=False))
    # task_language_model: novels as GBK text files under 金庸/<book>/*.txt
    novel = "".join(s[:4])  # the example's chunking makes 4 training texts of it: one batch
    _write(f"{root}/datasets/金庸/书剑恩仇录/第一回.txt", novel, encoding="gbk")
    # task_iflytek_*: JSON lines {"sentence", "label"}
    iflytek = [json.dumps({"id": i, "sentence": t, "label": str(i % 3)}, ensure_ascii=False)
               for i, t in enumerate(s)]
    _write(f"{root}/datasets/iflytek/train.json", _lines(iflytek[:4]))
    _write(f"{root}/datasets/iflytek/dev.json", _lines(iflytek[4:6]))
    _write(f"{root}/datasets/iflytek/test.json", _lines(iflytek[6:]))


def characters():
    """Every character the datasets use (the tiny vocabularies cover them all)."""
    extra = "科学技术是什么我们去哪里看长城张三在学习李四了"
    return sorted(set("".join(SENTENCES) + extra + "第一生产力"))
