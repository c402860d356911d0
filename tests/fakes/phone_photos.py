"""Photos as phones make them, built in the test: more than one JPEG in one file.

An Ultra HDR photo (Android, and iPhones' HDR JPEGs alike) is a JPEG with an MPF segment (APP2)
pointing at a second JPEG after it, the gain map: Pillow reads such a file as "MPO". A motion
photo is a JPEG with a video (MP4) after its end. Both are built here with a thumbnail inside the
EXIF data, as cameras write it: a JPEG of its own inside the first picture's header.
"""

from __future__ import annotations

import io
import struct

from PIL import Image


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def exif_with_thumbnail() -> bytes:
    """EXIF data (big-endian TIFF, no tags) followed by a small JPEG, as a camera's thumbnail."""
    return b"Exif\x00\x00MM\x00*" + struct.pack(">IHI", 8, 0, 0) + _jpeg(Image.new("RGB", (8, 8)))


def photo(width: int = 96, height: int = 64) -> Image.Image:
    return Image.new("RGB", (width, height), (200, 120, 40))


def ultra_hdr(width: int = 96, height: int = 64) -> tuple[bytes, bytes]:
    """An Ultra HDR photo (the photo, then its gain map at half size, joined by MPF), and the
    photo alone as a JPEG file of its own (what should be sent: its bytes without the MPF)."""
    gain_map = Image.new("L", (width // 2, height // 2), 128)
    buffer = io.BytesIO()
    photo(width, height).save(
        buffer, format="MPO", save_all=True, append_images=[gain_map], exif=exif_with_thumbnail()
    )
    data = buffer.getvalue()
    return data, _without_mpf(data[: first_picture_size(data)])


def motion_photo(width: int = 96, height: int = 64) -> tuple[bytes, bytes]:
    """A motion photo (the photo, progressive, then an MP4 after its end), and the photo."""
    still = _jpeg(photo(width, height), progressive=True, exif=exif_with_thumbnail())
    video = (
        struct.pack(">I", 24) + b"ftypmp42" + b"\x00" * 12 + b"\x00\x00\x10\x00mdat" + bytes(4096)
    )
    return still + video, still


def first_picture_size(data: bytes) -> int:
    """Where the first picture of an MPO file ends, by its MPF's first entry (as Pillow reads
    it)."""
    with Image.open(io.BytesIO(data)) as image:
        return int(image.mpinfo[0xB002][0]["Size"])  # type: ignore[attr-defined]


def _without_mpf(data: bytes) -> bytes:
    """The JPEG ``data`` without its APP2 MPF segment."""
    start = data.index(b"\xff\xe2")
    while data[start + 4 : start + 8] != b"MPF\x00":
        start = data.index(b"\xff\xe2", start + 2)
    length = int.from_bytes(data[start + 2 : start + 4], "big")
    return data[:start] + data[start + 2 + length :]
