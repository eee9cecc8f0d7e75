"""Which media a web feed's item names, with what alt text (node/bridges/enclosures.py, spec §14.4); no IO."""

from __future__ import annotations

from tidings.node.bridges.enclosures import with_links
from tidings.node.bridges.feeds import parse_feed
from tidings.protocol.content import MAX_TEXT

DOC = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>M</title>
<item><title>group</title><guid isPermaLink="false">a</guid>
  <media:group>
    <media:content url="/v/big.jpg" type="image/jpeg" fileSize="5000"/>
    <media:content url="https://cdn.example/v/own.jpg" type="image/jpeg">
      <media:title>Own title</media:title></media:content>
    <media:description type="html">&lt;b&gt;Group&lt;/b&gt; words</media:description>
  </media:group>
  <media:thumbnail url="https://cdn.example/t.jpg"/>
</item>
<item><title>video</title><guid isPermaLink="false">b</guid>
  <media:content url="https://cdn.example/clip.mp4" type="video/mp4" medium="video"/>
  <media:thumbnail url="https://cdn.example/clip.jpg"/>
  <media:description>A clip of the sea</media:description>
</item>
<item><title>odd</title><guid isPermaLink="false">c</guid>
  <enclosure url="ftp://files.example/x.jpg" type="image/jpeg"/>
  <enclosure url="https://files.example/y.jpg#frag" type="image/jpeg; charset=x" length="12"/>
  <media:content url="https://files.example/y.jpg" medium="image"/>
  <enclosure url="javascript:alert(1)"/>
</item>
</channel></rss>"""


def _media(item_id: str):
    parsed = parse_feed(DOC, url="https://feeds.example/m.xml")
    (item,) = [i for i in parsed.items if i.id == item_id]
    return item.media


def test_media_group_alt_text_relative_urls_and_declared_sizes():
    big, own = _media("a")
    assert big.url == "https://feeds.example/v/big.jpg" and big.length == 5000 and big.mime == "image/jpeg"
    assert big.alt == "Group words"  # the group's description, HTML made text
    assert own.alt == "Own title"  # its own title first
    assert not big.thumbnail  # a thumbnail beside pictures is left out


def test_a_thumbnail_is_the_picture_of_a_video_item():
    clip, thumb = _media("b")
    assert clip.mime == "video/mp4" and not clip.maybe_picture
    assert thumb.url == "https://cdn.example/clip.jpg" and thumb.thumbnail and thumb.maybe_picture
    assert thumb.alt == clip.alt == "A clip of the sea"  # the item's media:description


def test_only_http_urls_once_each_and_mime_parameters_dropped():
    (only,) = _media("c")
    assert only.url == "https://files.example/y.jpg" and only.mime == "image/jpeg" and only.length == 12


def test_with_links_adds_what_fits():
    assert with_links("text", ["https://a.example/1", "https://a.example/1"]) == "text\nhttps://a.example/1"
    full = "x" * (MAX_TEXT - 10)
    assert with_links(full, ["https://a.example/very/long"]) == full
    assert with_links("see https://a.example/1", ["https://a.example/1"]) == "see https://a.example/1"
