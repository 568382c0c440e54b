"""Waymo segments to the mmdet3d 1.4 data layout, without TensorFlow (``tools/create_data.py waymo``).

Input (Waymo's own layout)::

    ROOT/waymo_format/training/*.tfrecord
    ROOT/waymo_format/validation/*.tfrecord
    ROOT/waymo_format/testing/*.tfrecord      (any of the three may be missing)

Output, as mmdet3d 1.4's ``tools/create_data.py waymo --out-dir OUT`` writes it (the stock Waymo configs use
``data_root = OUT/kitti_format/``)::

    OUT/kitti_format/training/velodyne/{sample_idx}.bin   training (prefix 0) and validation (prefix 1) frames
    OUT/kitti_format/testing/velodyne/{sample_idx}.bin    testing frames (prefix 2)
    OUT/kitti_format/waymo_infos_{train,val,trainval,test}.pkl
    OUT/kitti_format/waymo_gt_database/*.bin, waymo_dbinfos_train.pkl   (mmdet3d's GTDatabaseCreater)
    OUT/kitti_format/.create_data/{split}/{segment}.pkl / .done         (per-segment infos and done markers)

A ``.bin`` holds the frame's points as float32 ``[N, 6]`` (:func:`.points.frame_to_points`); the infos are
``dict(metainfo=..., data_list=[...])`` with one entry per frame (:mod:`.infos`). Segments are converted in
parallel (``workers`` processes, mmengine's progress bar). A segment is done when its infos file and then its done
marker are written, after all its point files; a rerun skips done segments whose source file, segment index and
options are unchanged (and whose point files are all there), so an interrupted run resumes where it stopped.

Bad input stops the conversion with an error naming the file and byte offset (``TFRecordCorruptError``: CRC
mismatch, truncation) or the file, frame and lidar (``WaymoFrameError``: a record that is not a ``Frame``, a range
image that does not decode). With ``skip_corrupt`` both are logged and skipped; frame indices then count the
records that were read.

``load_interval=N`` keeps one training frame in N (frame indices 0, N, 2N, ...; their ``sample_idx`` keeps the
original frame index): mmdet3d's "D5" subsampling done at conversion time. mmdet3d's ``waymoD5`` configs instead
subsample at load time (``load_interval=5`` in the training dataset); do one or the other, not both. Validation and
testing frames are always all converted.

Not written (lidar-only experiments): camera images (unless ``save_images``), ``cam_sync_instances``,
``cam_instances``, the ``ImageSets`` lists and the camera-only test split.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import pickle
import subprocess
import sys
from dataclasses import asdict, dataclass
from glob import glob
from pathlib import Path

import mmengine
import numpy as np

from .frame import WaymoFrameError, parse_frame
from .infos import CLASS_NAMES, frame_info, sample_index
from .points import frame_to_points
from .tfrecord import TFRecordReader

__all__ = ['SPLITS', 'SegmentTask', 'convert_segment', 'create_waymo_data', 'create_gt_database']

logger = logging.getLogger(__name__)

#: Waymo split -> (sample_idx prefix, output folder, info file tag, test mode). mmdet3d's numbering.
SPLITS = {
    'training': (0, 'training', 'train', False),
    'validation': (1, 'training', 'val', False),
    'testing': (2, 'testing', 'test', True),
}
#: bump when the written files change meaning: older done markers are then ignored.
FORMAT_VERSION = 1
STATE_DIR = '.create_data'


@dataclass(frozen=True)
class SegmentTask:
    """Everything one worker needs to convert one segment."""

    source: str
    split: str
    file_idx: int
    data_root: str
    load_interval: int = 1
    max_sweeps: int = 10
    skip_corrupt: bool = False
    save_images: bool = False

    @property
    def prefix(self) -> int:
        return SPLITS[self.split][0]

    @property
    def stem(self) -> str:
        return Path(self.source).stem

    def state_paths(self) -> tuple[Path, Path]:
        base = Path(self.data_root) / STATE_DIR / self.split / self.stem
        return base.with_suffix('.pkl'), base.with_suffix('.done')

    def key(self) -> dict:
        """What decides the segment's outputs; a done marker with another key is stale."""
        st = os.stat(self.source)
        return dict(asdict(self), source=os.path.abspath(self.source), size=st.st_size, mtime_ns=st.st_mtime_ns,
                    format_version=FORMAT_VERSION, data_root=None)


@dataclass
class SegmentResult:
    """What :func:`convert_segment` did: the segment's infos, frames read, corrupt records or frames skipped,
    and whether it was already done."""

    infos: list[dict]
    frames_read: int = 0
    records_skipped: int = 0
    cached: bool = False
    source: str = ''


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)


def convert_segment(task: SegmentTask) -> SegmentResult:
    """Convert one segment (or load its infos if it is already done); see the module docstring."""
    infos_path, done_path = task.state_paths()
    key = task.key()
    if done_path.exists() and infos_path.exists():
        try:
            done = json.loads(done_path.read_text())
        except ValueError:
            done = None
        if done == key:
            with open(infos_path, 'rb') as f:
                infos = pickle.load(f)
            velodyne = Path(task.data_root) / SPLITS[task.split][1] / 'velodyne'
            if all((velodyne / info['lidar_points']['lidar_path']).exists() for info in infos):
                return SegmentResult(infos, cached=True, source=task.source)
    done_path.unlink(missing_ok=True)

    prefix, subdir, _, test_mode = SPLITS[task.split]
    velodyne = Path(task.data_root) / subdir / 'velodyne'
    velodyne.mkdir(parents=True, exist_ok=True)
    interval = task.load_interval if task.split == 'training' else 1
    infos: list[dict] = []
    frames_read = bad_frames = 0
    reader = TFRecordReader(task.source, skip_corrupt=task.skip_corrupt)
    for index, record in enumerate(reader.records()):
        frames_read += 1
        if index % interval:
            continue
        try:
            rec = parse_frame(record.data, index, record.offset, reader.path)
            points = frame_to_points(rec)
        except WaymoFrameError as e:  # valid framing, bad content
            if not task.skip_corrupt:
                raise
            logger.warning('%s (skipped: --skip-corrupt)', e)
            bad_frames += 1
            continue
        sid = sample_index(prefix, task.file_idx, rec.index)
        points.tofile(velodyne / f'{sid}.bin')
        if task.save_images:
            for img in rec.frame.images:
                img_dir = Path(task.data_root) / subdir / f'image_{img.name - 1}'
                img_dir.mkdir(parents=True, exist_ok=True)
                (img_dir / f'{sid}.jpg').write_bytes(img.image)
        infos.append(frame_info(rec.frame, prefix=prefix, segment=task.file_idx, frame_idx=rec.index,
                                previous=infos, max_sweeps=task.max_sweeps, with_instances=not test_mode))
    infos_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(infos_path, pickle.dumps(infos, protocol=pickle.HIGHEST_PROTOCOL))
    _write_atomic(done_path, json.dumps(key).encode())
    return SegmentResult(infos, frames_read=frames_read, records_skipped=reader.num_skipped + bad_frames,
                         source=task.source)


def _metainfo() -> dict:
    return dict(dataset='waymo', version='waymo_v1.4', info_version='mmdet3d_v1.4',
                categories={name: i for i, name in enumerate(CLASS_NAMES)},
                converter='graddrop_mtl.det3d.waymo (no TensorFlow)')


def _run(tasks: list[SegmentTask], workers: int) -> list[SegmentResult]:
    if not tasks:
        return []
    if workers <= 1 or len(tasks) == 1:
        return mmengine.track_progress(convert_segment, tasks)
    return mmengine.track_parallel_progress(convert_segment, tasks, min(workers, len(tasks)))


def create_waymo_data(root_path: str | os.PathLike, out_dir: str | os.PathLike, *, workers: int = 4,
                      load_interval: int = 1, skip_corrupt: bool = False, info_prefix: str = 'waymo',
                      max_sweeps: int = 10, splits: tuple[str, ...] = ('training', 'validation', 'testing'),
                      gt_database: bool = True, save_images: bool = False) -> dict:
    """Convert ``root_path/waymo_format/{split}/*.tfrecord`` into ``out_dir/kitti_format`` (module docstring).

    Returns a summary: the data root, the info files written, and per split the numbers of segments (converted /
    already done), frames and skipped corrupt records.
    """
    if load_interval < 1:
        raise ValueError(f'load_interval must be >= 1, got {load_interval}')
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f'unknown Waymo split(s) {unknown}; choose from {list(SPLITS)}')
    source_root = Path(root_path) / 'waymo_format'
    data_root = Path(out_dir) / 'kitti_format'
    found = {s: sorted(glob(str(source_root / s / '*.tfrecord'))) for s in splits}
    if not any(found.values()):
        raise FileNotFoundError(
            f'no segments found: expected {source_root}/{{{",".join(splits)}}}/*.tfrecord (Waymo Open Dataset '
            f'v1.4 layout: put the downloaded training/validation/testing .tfrecord files there)')
    data_root.mkdir(parents=True, exist_ok=True)
    summary: dict = dict(data_root=str(data_root), info_files={}, splits={})
    split_infos: dict[str, list[dict]] = {}
    for split in splits:
        files = found[split]
        if not files:
            mmengine.print_log(f'create_data: no segments in {source_root / split}, skipping the {split} split',
                               logger='current')
            continue
        tasks = [SegmentTask(f, split, i, str(data_root), load_interval, max_sweeps, skip_corrupt, save_images)
                 for i, f in enumerate(files)]
        mmengine.print_log(f'create_data: converting {len(files)} {split} segment(s) with {workers} worker(s)',
                           logger='current')
        results = _run(tasks, workers)
        data_list = [info for r in results for info in r.infos]
        split_infos[split] = data_list
        tag = SPLITS[split][2]
        info_file = data_root / f'{info_prefix}_infos_{tag}.pkl'
        mmengine.dump(dict(metainfo=_metainfo(), data_list=data_list), str(info_file))
        summary['info_files'][tag] = str(info_file)
        summary['splits'][split] = dict(
            segments=len(files), converted=sum(not r.cached for r in results),
            already_done=sum(r.cached for r in results),
            frames=len(data_list), records_skipped=sum(r.records_skipped for r in results))
        s = summary['splits'][split]
        mmengine.print_log(f"create_data: {split}: {s['frames']} frames from {s['segments']} segment(s) "
                           f"({s['converted']} converted, {s['already_done']} already done, "
                           f"{s['records_skipped']} corrupt record(s) skipped) -> {info_file}", logger='current')
    if 'training' in split_infos and 'validation' in split_infos:
        info_file = data_root / f'{info_prefix}_infos_trainval.pkl'
        mmengine.dump(dict(metainfo=_metainfo(), data_list=split_infos['training'] + split_infos['validation']),
                      str(info_file))
        summary['info_files']['trainval'] = str(info_file)
    if gt_database and split_infos.get('training'):
        summary['dbinfos'] = create_gt_database(data_root, info_prefix=info_prefix, workers=workers)
    return summary


def _mmdet3d_tool(name: str):
    """Import a module of mmdet3d's own ``tools/dataset_converters`` (shipped in the package's ``.mim`` folder)."""
    import mmdet3d
    path = Path(mmdet3d.__file__).parent / '.mim' / 'tools' / 'dataset_converters' / f'{name}.py'
    if not path.exists():
        raise FileNotFoundError(f'mmdet3d tool {path} not found (mmdet3d 1.4 installed with its .mim tools?)')
    mod_name = f'_mmdet3d_tools_{name}'
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # its classes must pickle by name into worker processes
    spec.loader.exec_module(module)
    return module


def create_gt_database(data_root: str | os.PathLike, *, info_prefix: str = 'waymo', workers: int = 0) -> str:
    """Build the ground-truth database for ``ObjectSample`` with mmdet3d's own ``GTDatabaseCreater``, exactly as
    mmdet3d's ``create_data.py waymo`` does; return the dbinfos path.

    With ``workers > 1`` the creator forks worker processes that run torch operations. Forking a process whose
    OpenMP runtime is already running (because torch computed something in it before) deadlocks the workers, so
    the creator then runs in a new Python process (which forks its workers before using torch).
    """
    if workers > 1:
        code = ('import sys; from graddrop_mtl.det3d.waymo.converter import _create_gt_database; '
                '_create_gt_database(sys.argv[1], sys.argv[2], int(sys.argv[3]))')
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        res = subprocess.run([sys.executable, '-c', code, str(data_root), info_prefix, str(workers)], env=env)
        if res.returncode:
            raise RuntimeError(f'creating the ground-truth database in {data_root} failed (exit code '
                               f'{res.returncode}); its error is printed above')
        return str(Path(data_root) / f'{info_prefix}_dbinfos_train.pkl')
    return _create_gt_database(str(data_root), info_prefix, 0)


def _create_gt_database(data_root: str, info_prefix: str, workers: int) -> str:
    import mmdet3d.datasets  # noqa: F401  (registers WaymoDataset and the loading transforms)
    from mmengine.registry import DefaultScope
    module = _mmdet3d_tool('create_gt_database')
    creator = module.GTDatabaseCreater('WaymoDataset', str(data_root), info_prefix, f'{info_prefix}_infos_train.pkl',
                                       relative_path=False, with_mask=False, num_worker=workers if workers > 1 else 0)
    with DefaultScope.overwrite_default_scope('mmdet3d'):  # mmdet3d's create_data.py sets this scope globally
        creator.create()
    return str(Path(data_root) / f'{info_prefix}_dbinfos_train.pkl')


def load_points(path: str | os.PathLike) -> np.ndarray:
    """Read a converted ``.bin`` back as ``[N, 6]`` float32."""
    data = np.fromfile(path, dtype=np.float32)
    if data.size % 6:
        raise ValueError(f'{path}: {data.size} float32 values is not a multiple of 6 point features')
    return data.reshape(-1, 6)
