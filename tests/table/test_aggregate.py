"""What a failed aggregation removes (ckptlens.table.aggregate.remove_products)."""

from ckptlens.table.aggregate import remove_products


def test_remove_products_removes_files_and_folders_that_exist(tmp_path):
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "pca.csv").write_text("x")
    (tmp_path / "plots" / "trajectories").mkdir(parents=True)
    (tmp_path / "plots" / "trajectories" / "a.png").write_bytes(b"png")
    (tmp_path / "plots" / "training.png").write_bytes(b"png")
    paths = [tmp_path / "analysis" / "pca.csv", tmp_path / "plots" / "trajectories", tmp_path / "analysis" / "gone.csv"]
    assert remove_products(paths) == [str(paths[0]), str(paths[1])]
    assert not paths[0].exists() and not paths[1].exists()
    assert (tmp_path / "plots" / "training.png").exists()  # not named: kept
