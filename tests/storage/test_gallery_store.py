"""The store's gallery query (storage.gallery's contract, which a PostgreSQL store mirrors):
scope, filters, search kept in sync by triggers, what is left out, and keyset paging with ties.
On both backends (the `store` fixture of tests/stores.py)."""
from __future__ import annotations


from storage.contract import Store
from storage.gallery import GalleryQuery, fts_match
from storage.models import GenerateParams, Job, JobKind, JobStatus, Origin

T0 = 1_750_000_000.0


def job(job_id: str, prompt: str, *, at: float, ws: str | None = "TA", user: str = "U1", **kw: object) -> Job:
    return Job(
        id=job_id, kind=JobKind.GENERATE, origin=Origin(platform="slack", workspace_id=ws, channel_id="C1", user_id=user),
        prompt=prompt, params=GenerateParams(seconds=2, size="256x144", seed=1), pipeline=str(kw.pop("pipeline", "local")),
        status=kw.pop("status", JobStatus.COMPLETED), created_at=at, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def ids(jobs: list[Job]) -> list[str]:
    return [j.id for j in jobs]


async def test_scope_filters_and_what_is_left_out(store: Store) -> None:
    await store.create(job("a1", "a lighthouse in a storm", at=T0 + 1))
    await store.create(job("a2", "a red kite", at=T0 + 2, user="U2", pipeline="sora", status=JobStatus.FAILED))
    await store.create(job("b1", "a lighthouse blueprint", at=T0 + 3, ws="TB"))
    await store.create(job("n1", "no workspace (a DM)", at=T0 + 4, ws=None))
    await store.create(job("s1", "scene one", at=T0 + 5, parent_id="a1", state={"story_scene": 1}))
    await store.create(job("d1", "deleted", at=T0 + 6, deleted_at=T0 + 7))
    tenant = GalleryQuery(platform="slack", workspace_id="TA")
    assert ids(await store.gallery(tenant)) == ["a2", "a1"]
    assert ids(await store.gallery(GalleryQuery(platform="slack", workspace_id=None))) == ["n1"]
    assert ids(await store.gallery(GalleryQuery(scoped=False))) == ["n1", "b1", "a2", "a1"]
    for change, expected in (
        ({"user_id": "U2"}, ["a2"]), ({"pipeline": "local"}, ["a1"]), ({"status": "failed"}, ["a2"]), ({"channel_id": "C9"}, []),
        ({"since": T0 + 1.5}, ["a2"]), ({"until": T0 + 1.5}, ["a1"]), ({"search": "lighthouse"}, ["a1"]),
    ):  # fmt: skip
        assert ids(await store.gallery(GalleryQuery(platform="slack", workspace_id="TA", **change))) == expected, change  # type: ignore[arg-type]
    facets = await store.gallery_facets(tenant)
    assert facets["users"] == [("U1", None), ("U2", None)] and facets["pipelines"] == [("local", None), ("sora", None)]


async def test_search_is_word_prefixes_stemmed_and_follows_prompt_changes(store: Store) -> None:
    await store.create(job("k1", "Kites flying over the Désert", at=T0))
    search = lambda text: store.gallery(GalleryQuery(scoped=False, search=text))  # noqa: E731
    assert ids(await search("kite")) == ["k1"] and ids(await search("KIT")) == ["k1"] and ids(await search("desert fly")) == ["k1"]
    assert ids(await search("kite ocean")) == [] and ids(await search('") (*')) == ["k1"]
    assert fts_match('kite" OR x') == '"kite"* "OR"* "x"*' and fts_match("  -- ") is None
    await store.update("k1", prompt="a fox in the snow")
    assert ids(await search("kite")) == [] and ids(await search("fox")) == ["k1"]


async def test_keyset_pages_cover_everything_once_even_with_equal_times(store: Store) -> None:
    for i in range(25):
        await store.create(job(f"p{i:02d}", f"clip {i}", at=T0 + (i // 5)))  # five jobs per instant
    seen: list[str] = []
    before = None
    while True:
        page = await store.gallery(GalleryQuery(scoped=False, before=before, limit=7))
        seen += ids(page)
        if len(page) < 7:
            break
        before = (page[-1].created_at, page[-1].id)
    assert len(seen) == 25 and len(set(seen)) == 25
    assert seen == sorted(seen, key=lambda i: (T0 + int(i[1:]) // 5, i), reverse=True)
    # A search pages like the rest (its speed on a big table is measured in bench/gallery.py).
    found = ids(await store.gallery(GalleryQuery(scoped=False, search="clip", limit=24)))
    assert found == seen[:24]
