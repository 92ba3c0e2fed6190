from journalstore import ImageStore


def test_create_and_reopen(store_dir):
    with ImageStore(store_dir, fsync="never") as s:
        img = s.create(names=["a:1"], layer="L")
    with ImageStore(store_dir, read_only=True) as r:
        assert r.get("a:1") == img._replace(read_only=True)
