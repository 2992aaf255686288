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
import math
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
NODE_LIMIT = 1 << 20  # values (numbers, strings, containers, keys) in one JSON document
STRING_LIMIT = 1 << 16  # characters of one JSON string or key
MEMBER_LIMIT = 4096  # members of a save (a save writes 8 + one per large parameter array)
DIRECTORY_LIMIT = 4 << 20  # bytes of the zip's central directory
MESSAGE_LIMIT = 900  # characters of an error message from a file's content
_SAFETENSORS_HEADER_LIMIT = 16 << 20
_CHUNK = 1 << 20  # bytes inflated per read of a compressed member
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what a save writes; bzip2, lzma... refused
_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so that the same learner gives the same bytes
# what zipfile raises on a damaged archive (NotImplementedError: an unknown method or version)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError)


class InvalidSave(ValueError):
    """A file that is not a valid save; ``member`` names the part at fault."""

    def __init__(self, member, message):
        member = shorten(member, 120) if member else member
        super().__init__(shorten(f"{member}: {message}" if member else message, MESSAGE_LIMIT))
        self.member = member


def shorten(text, limit):
    """``text`` cut to at most ``limit`` characters (a file's names can be megabytes long)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 40]}... ({len(text) - limit + 40} more characters)"


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
    directory, base = os.path.dirname(target), os.path.basename(target)
    temporary = None
    try:
        # the name is known here before the file exists, so that an interrupt at any point
        # after its creation (even before open() returns) still removes it
        while True:
            temporary = _temporary_name(directory, base)
            try:
                f = open(temporary, "xb")  # mode 0o666 less the umask, as a new file gets
                break
            except FileExistsError:  # another file of that name: never ours to remove
                temporary = None
            except PermissionError as error:
                temporary = None
                raise PermissionError(error.errno, f"cannot write a save in the directory "
                                                   f"{directory!r}: {error.strerror}",
                                      os.path.join(directory, base)) from None
        with f:
            if existing is not None and hasattr(os, "fchmod"):
                _keep_mode(f.fileno(), existing)
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
        if temporary is not None and os.path.lexists(temporary):
            os.remove(temporary)
        raise
    _fsync_directory(directory)


def _keep_mode(fd, existing):
    # keep the existing file's permissions (and owner, where allowed). A function of its own:
    # on CPython 3.11 an exception raised (by a tracer) on the first line of a try nested in
    # write_archive's was seen to escape write_archive's handler, which removes the file.
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))
    try:
        os.fchown(fd, existing.st_uid, existing.st_gid)
    except PermissionError:
        pass


def _temporary_name(directory, base):
    # the name stays under NAME_MAX (255) whatever the target's length
    return os.path.join(directory, f".{base[:200]}.{secrets.token_hex(6)}.tmp")


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
        if status is not None and stat.S_ISREG(status.st_mode):
            check_directory(path, status.st_size)  # before zipfile reads a directory of any size
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
        infos = self.zip.infolist()
        if len(infos) > MEMBER_LIMIT:
            raise InvalidSave(None, f"{len(infos)} members, more than a save has (at most {MEMBER_LIMIT})")
        seen, duplicates = set(), set()
        for info in infos:  # linear: one set lookup per member
            (duplicates if info.filename in seen else seen).add(info.filename)
        if duplicates:
            raise InvalidSave(min(duplicates), "the archive holds this member more than once")
        unknown = sorted(name for name in seen - required - optional
                         if not (self.pattern and self.pattern.match(name)))
        if unknown:
            raise InvalidSave(unknown[0], "not a member of a skal save")
        missing = sorted(required - seen)
        if missing:
            raise InvalidSave(missing[0], "missing from the archive")
        size = os.path.getsize(self.path)
        for info in infos:
            if info.flag_bits & 0x1:
                raise InvalidSave(info.filename, "encrypted")
            if info.compress_type not in _METHODS:
                raise InvalidSave(info.filename, f"compressed with method {info.compress_type}; a save "
                                                 "is stored or deflated, nothing else")
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
        # the declared size is only a claim: the read itself stops at the cap
        return loads_bounded(self._read(name, min(JSON_LIMIT, JSON_RATIO * info.compress_size + (1 << 20))),
                             name)

    def _read(self, name, cap):
        """The member's bytes; refused once more than ``cap`` come out, whatever it declares.

        A stored member is read as it is (its size was checked against the file). A deflated
        one is inflated a chunk at a time into a buffer of its declared size (never more than
        ``cap``): zipfile asks zlib for at most a chunk per read (``max_length``) and stops at
        the declared size, then compares the CRC, so a stream that would inflate to gigabytes
        costs the buffer and one chunk. Other methods (bzip2, lzma, whose decompressors take no
        such bound) were refused with the member list.
        """
        info = self.info(name)
        size = min(cap, info.file_size)
        try:
            with self.zip.open(info) as f:
                if info.compress_type == zipfile.ZIP_STORED:
                    data = f.read(size + 1)
                    got = len(data)
                else:
                    data = bytearray(size + 1)
                    with memoryview(data) as view:
                        got = 0
                        while got <= size:
                            count = f.readinto(view[got:got + _CHUNK])
                            if not count:
                                break
                            got += count
                    del data[got:]
        except _ZIP_ERRORS as error:
            raise InvalidSave(name, str(error)) from error
        if got > size:
            raise InvalidSave(name, f"inflates to more than {size} bytes, over its limit")
        return data

    def read_bytes(self, name, limit=None):
        info = self._stored(name)
        if limit is not None and info.file_size > limit:
            raise InvalidSave(name, f"declares {info.file_size} bytes, over the limit of {limit}")
        return self._read(name, info.file_size)

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
        return check_npy_header(name, shape, fortran, dtype, offset, info.file_size)

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
                text = f.read(length)
        except (*_ZIP_ERRORS, ValueError) as error:
            raise InvalidSave(name, f"not a valid safetensors file: {error}") from error
        try:
            header = loads_bounded(text, name)
        except InvalidSave as error:
            if "nested deeper" in str(error):
                raise InvalidSave(name, "its header is nested too deeply") from None
            raise InvalidSave(name, f"not a valid safetensors file: {str(error)[len(name) + 2:]}") from None
        if not isinstance(header, dict):
            raise InvalidSave(name, "its header is not a JSON object")
        header.pop("__metadata__", None)
        end = 0
        for key, entry in header.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list)
                    and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in entry["shape"])
                    and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
                    and all(isinstance(n, int) and n >= 0 for n in entry["data_offsets"])):
                raise InvalidSave(name, f"tensor {shorten(repr(key), 100)}: malformed header entry")
            end = max(end, entry["data_offsets"][1])
        if 8 + length + end != info.file_size:
            raise InvalidSave(name, f"its header describes {8 + length + end} bytes but the "
                                    f"member declares {info.file_size}")
        return header


def check_npy_header(name, shape, fortran, dtype, offset, size):
    """``(shape, dtype, offset)`` once the header describes exactly ``size`` bytes of plain data.

    Checked before anything is allocated: every dimension a non-negative integer, a dtype of
    plain numbers or strings with a positive item size, and the bytes it describes those of
    the member (so no header can ask for more memory than the file holds).
    """
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                             for n in shape)):
        raise InvalidSave(name, f"its header declares the shape {shorten(repr(shape), 200)}; "
                                "dimensions must be non-negative integers")
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidSave(name, f"has dtype {shorten(str(dtype), 200)}; only plain numbers, booleans "
                                "and strings are read (never objects)")
    if dtype.itemsize == 0:
        raise InvalidSave(name, f"has dtype {dtype}, whose items take no bytes; a save writes "
                                "strings of at least one character")
    if fortran:
        raise InvalidSave(name, "is in Fortran order; saves write C order")
    described = offset + math.prod(shape) * dtype.itemsize
    if described != size:
        raise InvalidSave(name, f"its header describes {described} bytes (shape "
                                f"{shorten(repr(shape), 200)}, dtype {dtype}) but the member declares {size}")
    return shape, dtype, offset


def check_directory(path, size):
    """Refuse a zip whose central directory is larger than a save's, before zipfile reads it.

    zipfile builds an object per member from the central directory: this reads the end
    records (at most 64 KiB from the end of the file) and checks the count and the size.
    """
    tail_size = min(size, (1 << 16) + 22)
    try:
        with open(path, "rb") as f:
            f.seek(size - tail_size)
            tail = f.read(tail_size)
    except OSError:
        return  # ZipFile reports it
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        return  # not a zip: ZipFile says so
    count, directory = struct.unpack("<HI", tail[at + 10:at + 16])
    if (count == 0xFFFF or directory == 0xFFFFFFFF) and at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":
        (offset,) = struct.unpack("<Q", tail[at - 12:at - 4])
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                record = f.read(56)
        except (OSError, ValueError):
            return
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            count, directory = struct.unpack("<QQ", record[32:48])
    if count > MEMBER_LIMIT:
        raise InvalidSave(None, f"{count} members, more than a save has (at most {MEMBER_LIMIT})")
    if directory > DIRECTORY_LIMIT:
        raise InvalidSave(None, f"a central directory of {directory} bytes, more than a save has "
                                f"(at most {DIRECTORY_LIMIT})")


def json_scan(data, where):
    """Refuse JSON of more than NODE_LIMIT values before it is parsed.

    Every value but the first follows a ``,``, a ``:``, a ``[`` or a ``{``: their count (in C,
    strings included, so an over-estimate) bounds what a parse would build. Ten million
    empty objects would take gigabytes to parse; counting them takes milliseconds.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise InvalidSave(where, "not valid JSON: not bytes")
    nodes = 1 + sum(data.count(c) for c in (b",", b":", b"[", b"{"))
    if nodes > NODE_LIMIT:
        raise InvalidSave(where, f"holds about {nodes} values, over the limit of {NODE_LIMIT}")


def loads_bounded(data, where):
    """``json.loads`` within NODE_LIMIT values, DEPTH_LIMIT levels and STRING_LIMIT characters.

    The count comes first (:func:`json_scan`); the parser's own recursion guard stops a
    deep document within a thousand levels, and a string is never larger than the bytes
    that hold it, so the parse costs at most a few times the member's bounded size. Depth and
    strings are then checked before any value is used.
    """
    json_scan(data, where)
    try:
        value = json.loads(data)
    except RecursionError:
        raise InvalidSave(where, f"nested deeper than {DEPTH_LIMIT} levels") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidSave(where, f"not valid JSON: {error}") from error
    check_depth(value, where)
    return value


def check_depth(value, where):
    """Refuse JSON nested deeper than DEPTH_LIMIT or with a string (or key) longer than
    STRING_LIMIT, without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if len(item) > STRING_LIMIT:
                raise InvalidSave(where, f"holds a string of {len(item)} characters, over the limit "
                                         f"of {STRING_LIMIT}")
        elif isinstance(item, (list, dict)):
            if depth > DEPTH_LIMIT:
                raise InvalidSave(where, f"nested deeper than {DEPTH_LIMIT} levels")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


def check_stored_zip(data, name):
    """Refuse an inner zip (skops) unless its members are few, stored and bounded.

    Its ``schema.json`` is read within the JSON limits and every ``.npy`` header checked
    (dimensions, item size, bytes) before skops parses any of it.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            infos = inner.infolist()
            if len(infos) > MEMBER_LIMIT:
                raise InvalidSave(name, f"holds {len(infos)} members, over the limit of {MEMBER_LIMIT}")
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                    raise InvalidSave(name, f"inner member {shorten(repr(info.filename), 100)} must be "
                                            "stored uncompressed")
            if sum(info.file_size for info in infos) > len(data):
                raise InvalidSave(name, "its members declare more bytes than it holds")
            for info in infos:
                if info.filename == "schema.json":
                    loads_bounded(inner.read(info), f"{name}: schema.json")
                elif info.filename.endswith(".npy"):
                    with inner.open(info) as f:
                        version = npy_format.read_magic(f)
                        read = (npy_format.read_array_header_1_0 if version == (1, 0)
                                else npy_format.read_array_header_2_0)
                        shape, fortran, dtype = read(f)
                        check_npy_header(f"{name}: {shorten(info.filename, 100)}", shape, fortran and False,
                                         dtype, f.tell(), info.file_size)
    except InvalidSave:
        raise
    except (*_ZIP_ERRORS, ValueError, SyntaxError) as error:
        raise InvalidSave(name, f"not a valid skops file: {error}") from error
