"""Downloading the images an answer links to (``url`` items), kept off the bot's own network.

Decisions:

- An image URL comes from the service's answer, so it is treated as hostile: only http(s), and
  only to public addresses. An IP literal is judged as aiohttp will parse it (yarl turns
  full-width digits and ideographic dots into one); a name is resolved by
  :class:`PublicOnlyResolver`, which drops every non-public address it resolves to, so a name
  cannot be pointed at loopback or the cloud metadata address after it was checked. An IPv6
  address carrying an IPv4 one (mapped, 6to4, NAT64, IPv4-compatible) is judged by the IPv4
  address it reaches. ``ALLOW_PRIVATE_IMAGE_URLS`` lifts this for a gateway on one's own network.
- Downloads go through their own session (with that resolver), which :class:`ImageFetcher`
  opens on first use and the client closes; where private URLs are allowed, the shared session
  serves. The key is never sent: the URL's host is not the API.
- Redirects are followed here, not by aiohttp, so that every hop is checked; at most
  ``MAX_REDIRECTS`` of them. One time limit covers the whole download, hops included.
- A download's failure is an :class:`ImageError` with the answer's request id; the image host's
  name is not repeated in it (it came from outside).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from .errors import (
    GenerationTimeout,
    ImageError,
    ImageLinkBroken,
    MalformedResponse,
    UpstreamUnavailable,
)
from .processing import run_off_loop_if_large
from .response import GeneratedImage, ImageLimits, ParsedBody, identify_image
from .upstream import NoPublicAddress, connection_failure, read_capped

MAX_REDIRECTS = 5


def is_public_address(address: str) -> bool:
    """Whether ``address`` is a globally routable IP address (not loopback, private, link-local,
    multicast, reserved; an IPv4-mapped IPv6 address is judged by its IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
        elif ip.is_site_local:
            return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, IPv4-compatible): it is
    what the connection reaches, so it is what is judged."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class PublicOnlyResolver(AbstractResolver):
    """Resolves names to public addresses only: image URLs come from the image service's
    answer, and must not make the bot fetch from its own host or network."""

    Refused = NoPublicAddress  # the name resolves to no public address

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        public = [entry for entry in found if is_public_address(entry["host"])]
        if not public:
            raise self.Refused("the name resolves to no public address")
        return public

    async def close(self) -> None:
        await self._resolver.close()


class ImageFetcher:
    """Downloads the ``url`` items of an answer. The client owns it and closes it with
    :meth:`close` (it closes the download session it opened, if any)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        allow_private_urls: bool,
        timeout: float,
        connect_timeout: float,
    ) -> None:
        self._shared = session  # the process's session: used where private URLs are allowed
        self._allow_private = allow_private_urls
        self._timeout = timeout  # seconds for one download, redirects included
        # aiohttp keeps only the time to connect; the download's own limit is an asyncio.timeout.
        self._connect = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(
        self, parsed: ParsedBody, request_id: str | None, limits: ImageLimits
    ) -> tuple[GeneratedImage, ...]:
        """Download the ``url`` items (concurrently) and return every image in order."""
        images = list(parsed.images)
        if parsed.urls:
            downloads = [
                self._download(url, parsed.revised_prompts[index], request_id, limits)
                for index, url in parsed.urls.items()
            ]
            fetched = await asyncio.gather(*downloads)
            for index, image in zip(parsed.urls, fetched, strict=True):
                images[index] = image
        return tuple(image for image in images if image is not None)

    def _downloads(self) -> aiohttp.ClientSession:
        if self._allow_private:
            return self._shared
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(), limit=20)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _check_image_url(self, url: str, request_id: str | None) -> yarl.URL:
        """The URL as aiohttp will fetch it, refused unless http(s) to an allowed address."""
        try:
            # Parsed as aiohttp parses it (yarl normalises full-width digits and ideographic
            # dots into an IP literal, which aiohttp then connects to without resolving).
            parsed = yarl.URL(url)
            scheme, host = parsed.scheme, parsed.raw_host
        except (ValueError, UnicodeError, TypeError):
            raise MalformedResponse(
                "an image URL in the response is not valid", request_id=request_id
            ) from None
        if scheme not in ("http", "https") or not host:
            raise MalformedResponse(
                "an image URL in the response is not http(s)", request_id=request_id
            )
        literal = host.strip("[]")
        try:
            ipaddress.ip_address(literal.split("%", 1)[0])
        except ValueError:
            return parsed  # a name: the resolver keeps it to public addresses
        if not self._allow_private and not is_public_address(literal):
            raise MalformedResponse(
                "an image URL in the response points at a private or loopback address "
                "(set ALLOW_PRIVATE_IMAGE_URLS=true for a gateway on your own network)",
                request_id=request_id,
            )
        return parsed

    async def _download(
        self, url: str, revised_prompt: str | None, request_id: str | None, limits: ImageLimits
    ) -> GeneratedImage:
        session = self._downloads()
        try:
            async with asyncio.timeout(self._timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    checked = self._check_image_url(url, request_id)
                    # No Authorization header: the URL's host is not the API and must not see
                    # the key. Redirects are followed here, so that each hop is checked.
                    async with session.get(
                        checked, timeout=self._connect, allow_redirects=False
                    ) as response:
                        location = response.headers.get("Location")
                        if response.status in (301, 302, 303, 307, 308) and location:
                            url = urljoin(str(checked), location)
                            continue
                        if response.status != 200:
                            raise ImageLinkBroken(
                                f"downloading an image answered HTTP {response.status}",
                                request_id=request_id,
                            )
                        data = await read_capped(response, limits.max_bytes)
                        break
                else:
                    raise ImageLinkBroken(
                        f"an image URL redirected more than {MAX_REDIRECTS} times",
                        request_id=request_id,
                    )
        except ImageError as error:
            error.request_id = error.request_id or request_id
            raise
        except TimeoutError:
            raise GenerationTimeout(
                "downloading an image timed out", request_id=request_id
            ) from None
        except aiohttp.ClientError as exc:
            # The image host comes from the answer: it is not repeated (see connection_failure).
            raise UpstreamUnavailable(
                f"downloading an image failed: {connection_failure(exc, host='the image host')}",
                request_id=request_id,
            ) from None
        except (ValueError, UnicodeError):
            # A host name aiohttp or the resolver cannot encode (a label over 63 characters).
            raise MalformedResponse(
                "an image URL in the response is not valid", request_id=request_id
            ) from None
        return await run_off_loop_if_large(
            len(data), lambda: identify_image(data, limits=limits, revised_prompt=revised_prompt)
        )
