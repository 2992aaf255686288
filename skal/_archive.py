"""The zip file of a save: written atomically, read with every size checked first.

Writing: members go to a temporary file in the target's directory, which is
flushed, ``fsync``-ed and moved over the target with :func:`os.replace`. A
symlink is written through to its target; anything but a regular file (a
directory, a device, a fifo, a socket) is refused before anything is written.

Reading: nothing is inflated before its declared size has been checked against
what its header implies. Arrays and tensors are stored uncompressed, so a
member's declared size is bytes that are really in the file and an array can
never inflate beyond the file; only ``learner.json`` is compressed, and its
size is capped. Every problem is a ``ValueError`` naming the member.
"""

import io
import json
import os
import secrets
import stat
import struct
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy_format

JSON_LIMIT = 32 << 20  # bytes of learner.json once inflated
JSON_RATIO = 50  # legitimate JSON deflates 5-15x; a bomb ~1000x
DEPTH_LIMIT = 64  # levels of nesting in any JSON value
_SAFETENSORS_HEADER_LIMIT = 16 << 20
_DATE = (1980, 1, 1, 0, 0, 0)
# what zipfile raises on a damaged archive (NotImplementedError: an unknown method or version)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError)  # fixed, so that the same learner gives the same bytes


class InvalidSave(ValueError):
    """A file that is not a valid save; ``member`` names the part at fault."""

    def __init__(self, member, message):
        super().__init__(f"{member}: {message}" if member else message)
        self.member = member


# --- writing -------------------------------------------------------------------------


def resolve_target(path):
    """The regular file that a save to ``path`` writes (through symlinks), checked.

    Returns
    -------
    target : str
    existing : os.stat_result or None
        The target's status when it exists (its permissions are kept).
    """
    target = os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)
    try:
        status = os.stat(target)
    except FileNotFoundError:
        status = None
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(f"path {path!r} is a directory; give a file name, e.g. "
                                f"{os.path.join(path, 'learner.skal')!r}.")
    if status is not None and not stat.S_ISREG(status.st_mode):
        kind = _file_kind(status.st_mode)
        raise ValueError(f"path {path!r} is {kind}, not a regular file; a save is only written "
                         "to a regular file (or a new one), never over anything else.")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        shown = os.path.dirname(os.path.abspath(path)) if target == os.path.abspath(path) else directory
        raise FileNotFoundError(f"path {path!r}: the directory {shown!r} does not exist.")
    return target, status


def _file_kind(mode):
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def write_archive(target, existing, members):
    """Write ``members`` (name -> (bytes, compressed)) atomically to ``target``."""
    directory = os.path.dirname(target)
    fd, temporary = _create_temporary(directory, os.path.basename(target))
    try:
        with os.fdopen(fd, "wb") as f:
            if existing is not None and hasattr(os, "fchmod"):
                # keep the existing file's permissions (and owner, where allowed)
                os.fchmod(f.fileno(), stat.S_IMODE(existing.st_mode))
                try:
                    os.fchown(f.fileno(), existing.st_uid, existing.st_gid)
                except PermissionError:
                    pass
            with zipfile.ZipFile(f, "w") as archive:
                for name, (data, compressed) in members.items():
                    info = zipfile.ZipInfo(name, date_time=_DATE)
                    info.compress_type = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
                    info.external_attr = 0o644 << 16
                    archive.writestr(info, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)  # atomic: the old save stays until the new one is whole
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise
    _fsync_directory(directory)


def _create_temporary(directory, base):
    # os.open with mode 0o666 lets the umask decide a new file's permissions, as open() does
    # (tempfile.mkstemp would make it 0600).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        # the name stays under NAME_MAX (255) whatever the target's length
        temporary = os.path.join(directory, f".{base[:200]}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
        except PermissionError as error:
            raise PermissionError(error.errno, f"cannot write a save in the directory {directory!r}: "
                                               f"{error.strerror}", os.path.join(directory, base)) from None


def _fsync_directory(directory):
    # the rename itself survives a power cut only once the directory is on disk
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


# --- reading ---------------------------------------------------------------------------


class Archive:
    """A save opened for reading, its members checked against ``expected``.

    Parameters
    ----------
    path : str
    required : set of str
        Members that must be there; ``optional`` ones may be, and so may those whose
        name matches ``pattern`` (a compiled regular expression).
    """

    def __init__(self, path, required, optional=(), pattern=None):
        self.path, self.pattern = path, pattern
        try:
            status = os.stat(path)
        except FileNotFoundError:
            raise
        except OSError:
            status = None  # let open() raise its own error
        if status is not None and not stat.S_ISREG(status.st_mode) and not stat.S_ISDIR(status.st_mode):
            # a fifo would block open(); a device is never a save
            raise InvalidSave(None, f"{_file_kind(status.st_mode)}, not a regular file")
        try:
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise
        except (*_ZIP_ERRORS, ValueError) as error:
            if isinstance(error, (IsADirectoryError, PermissionError)):
                raise
            raise InvalidSave(None, str(error)) from error
        try:
            self._check_members(set(required), set(optional))
        except BaseException:
            self.zip.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def _check_members(self, required, optional):
        names = [info.filename for info in self.zip.infolist()]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidSave(duplicates[0], "the archive holds this member more than once")
        unknown = sorted(name for name in set(names) - required - optional
                         if not (self.pattern and self.pattern.match(name)))
        if unknown:
            raise InvalidSave(unknown[0], "not a member of a skal save")
        missing = sorted(required - set(names))
        if missing:
            raise InvalidSave(missing[0], "missing from the archive")
        size = os.path.getsize(self.path)
        for info in self.zip.infolist():
            if info.flag_bits & 0x1:
                raise InvalidSave(info.filename, "encrypted")
            if info.header_offset + info.compress_size > size:
                raise InvalidSave(info.filename, f"declares {info.compress_size} bytes, more than "
                                                 f"the {size}-byte file holds")

    def has(self, name):
        return name in self.zip.NameToInfo

    def names(self):
        return set(self.zip.NameToInfo)

    def info(self, name):
        return self.zip.getinfo(name)

    def _stored(self, name):
        info = self.info(name)
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise InvalidSave(name, "must be stored uncompressed (its declared size "
                                    f"{info.file_size} is not the {info.compress_size} bytes it "
                                    "takes in the file)")
        return info

    def read_json(self, name):
        info = self.info(name)
        if info.file_size > JSON_LIMIT:
            raise InvalidSave(name, f"declares {info.file_size} bytes, over the limit of "
                                    f"{JSON_LIMIT} for this member")
        if info.file_size > JSON_RATIO * info.compress_size + (1 << 20):
            raise InvalidSave(name, f"declares {info.file_size} bytes from {info.compress_size} "
                                    "compressed ones, more than any JSON compresses")
        data = self._read(name)
        try:
            value = json.loads(data)
        except RecursionError:
            raise InvalidSave(name, f"nested deeper than {DEPTH_LIMIT} levels") from None
        except (UnicodeDecodeError, ValueError) as error:
            raise InvalidSave(name, f"not valid JSON: {error}") from error
        check_depth(value, name)
        return value

    def _read(self, name):
        try:
            with self.zip.open(name) as f:
                return f.read()
        except _ZIP_ERRORS as error:
            raise InvalidSave(name, str(error)) from error

    def read_bytes(self, name, limit=None):
        info = self._stored(name)
        if limit is not None and info.file_size > limit:
            raise InvalidSave(name, f"declares {info.file_size} bytes, over the limit of {limit}")
        return self._read(name)

    def npy_header(self, name):
        """``(shape, dtype)`` from the npy header; the declared size must be exactly that."""
        info = self._stored(name)
        try:
            with self.zip.open(name) as f:
                version = npy_format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = npy_format.read_array_header_1_0(f)
                elif version in ((2, 0), (3, 0)):
                    shape, fortran, dtype = npy_format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported npy version {version}")
                offset = f.tell()
        except (*_ZIP_ERRORS, ValueError, SyntaxError) as error:
            raise InvalidSave(name, f"not a valid npy array: {error}") from error
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise InvalidSave(name, f"has dtype {dtype}; only plain numbers, booleans and "
                                    "strings are read (never objects)")
        if fortran:
            raise InvalidSave(name, "is in Fortran order; saves write C order")
        size = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
        if size != info.file_size:
            raise InvalidSave(name, f"its header describes {size} bytes (shape {shape}, "
                                    f"dtype {dtype}) but the member declares {info.file_size}")
        return shape, dtype, offset

    def npy_array(self, name, header):
        """The array, read into place (no intermediate copy) after its header was checked."""
        shape, dtype, offset = header
        array = np.empty(shape, dtype=dtype)
        try:
            with self.zip.open(name) as f:
                f.read(offset)
                view = memoryview(array.reshape(-1).view(np.uint8)) if array.size else None
                if view is not None and f.readinto(view) != len(view):
                    raise EOFError("the array data ends early")
                if f.read(1):  # also makes zipfile compare the CRC
                    raise ValueError("data after the array")
        except (*_ZIP_ERRORS, ValueError) as error:
            raise InvalidSave(name, str(error)) from error
        return array

    def safetensors_header(self, name):
        """The safetensors header (name -> {dtype, shape, data_offsets}), read first."""
        info = self._stored(name)
        try:
            with self.zip.open(name) as f:
                head = f.read(8)
                if len(head) < 8:
                    raise ValueError("shorter than a safetensors header")
                (length,) = struct.unpack("<Q", head)
                if length > min(_SAFETENSORS_HEADER_LIMIT, info.file_size - 8):
                    raise ValueError(f"its header declares {length} bytes, more than the member holds")
                header = json.loads(f.read(length))
        except RecursionError:
            raise InvalidSave(name, "its header is nested too deeply") from None
        except (*_ZIP_ERRORS, ValueError) as error:
            raise InvalidSave(name, f"not a valid safetensors file: {error}") from error
        if not isinstance(header, dict):
            raise InvalidSave(name, "its header is not a JSON object")
        header.pop("__metadata__", None)
        end = 0
        for key, entry in header.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list)
                    and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in entry["shape"])
                    and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
                    and all(isinstance(n, int) and n >= 0 for n in entry["data_offsets"])):
                raise InvalidSave(name, f"tensor {key!r}: malformed header entry")
            end = max(end, entry["data_offsets"][1])
        if 8 + length + end != info.file_size:
            raise InvalidSave(name, f"its header describes {8 + length + end} bytes but the "
                                    f"member declares {info.file_size}")
        return header


def check_depth(value, where):
    """Refuse JSON nested deeper than DEPTH_LIMIT, without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > DEPTH_LIMIT:
                raise InvalidSave(where, f"nested deeper than {DEPTH_LIMIT} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def check_stored_zip(data, name):
    """Refuse an inner zip (skops) whose members are compressed or oversized."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            infos = inner.infolist()
    except (*_ZIP_ERRORS, ValueError) as error:
        raise InvalidSave(name, f"not a valid skops file: {error}") from error
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise InvalidSave(name, f"inner member {info.filename!r} must be stored uncompressed")
    if sum(info.file_size for info in infos) > len(data):
        raise InvalidSave(name, "its members declare more bytes than it holds")
