"""Where media files live under the data dir, and how they get there: atomically.

Layout: `<data>/media/<job id>/video.mp4`, `thumb.jpg`, `input.png`, `image.png`.
A file is written to a `.part` beside its final name and renamed when complete,
so a crash never leaves a half file under a final name.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        path = self.root / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def video_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "video.mp4"

    def thumbnail_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "thumb.jpg"

    def image_path(self, job_id: str, name: str = "image.png") -> Path:
        return self.job_dir(job_id) / name

    @staticmethod
    def temp_for(final: Path) -> Path:
        return final.with_name(final.name + ".part")

    @staticmethod
    def commit(temp: Path, final: Path) -> Path:
        """Make `temp` durable and rename it into place."""
        with temp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, final)
        return final

    def write_bytes(self, final: Path, data: bytes) -> Path:
        temp = self.temp_for(final)
        temp.write_bytes(data)
        return self.commit(temp, final)

    def copy_in(self, src: Path, final: Path) -> Path:
        temp = self.temp_for(final)
        shutil.copyfile(src, temp)
        return self.commit(temp, final)

    def delete_job_files(self, job_id: str) -> None:
        shutil.rmtree(self.root / job_id, ignore_errors=True)
