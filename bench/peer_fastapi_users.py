"""The fastapi-users peer: ``GET /me`` behind fastapi-users' ``current_active_user``, set up as
its documentation's full example does (JWT strategy, bearer transport, the SQLAlchemy user
database on aiosqlite, a session per request), plus its ``/auth/jwt/login`` for the token.

fastapi-users 15 cannot share bastion's .venv (it pins email-validator<2.4, pwdlib==0.3.0 and,
through fastapi-users-db-sqlalchemy, SQLAlchemy<2.1), so this module runs in .venv-peers
(bench/peers-requirements.txt: the same FastAPI, Starlette, pydantic, uvicorn, uvloop,
httptools and aiosqlite as bastion, SQLAlchemy 2.0). It imports nothing from bastion.

At start it creates its table and one user (``BENCH_PEER_EMAIL``, ``BENCH_PEER_PASSWORD``) in
the SQLite file ``BENCH_PEER_DATABASE_URL`` names; the bench logs in once through
``/auth/jwt/login`` and loads ``/me`` with that token. Served by
``python -m bench.peer_fastapi_users --port N``: one uvicorn worker, httptools and uvloop as
bastion's run_server, uvicorn's access log off, no Server header.

Type-checked against .venv-peers' packages (`make typecheck` covers src and tests only):
``.venv/bin/mypy --python-executable .venv-peers/bin/python bench/peer_fastapi_users.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
from fastapi_users.authentication import AuthenticationBackend, BearerTransport, JWTStrategy
from fastapi_users.exceptions import UserAlreadyExists
from fastapi_users_db_sqlalchemy import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

# A fresh secret per process: the bench gets its token from this process's login route.
SECRET = secrets.token_urlsafe(32)


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


class UserRead(schemas.BaseUser[uuid.UUID]):
    pass


class UserCreate(schemas.BaseUserCreate):
    pass


engine = create_async_engine(
    os.environ.get("BENCH_PEER_DATABASE_URL", "sqlite+aiosqlite:///./peer-fastapi-users.db")
)
async_session_maker = async_sessionmaker(engine, expire_on_commit=False)


async def get_async_session() -> AsyncIterator[AsyncSession]:
    async with async_session_maker() as session:
        yield session


async def get_user_db(
    session: Annotated[AsyncSession, Depends(get_async_session)],
) -> AsyncIterator[SQLAlchemyUserDatabase[User, uuid.UUID]]:
    yield SQLAlchemyUserDatabase(session, User)


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    reset_password_token_secret = SECRET
    verification_token_secret = SECRET


async def get_user_manager(
    user_db: Annotated[SQLAlchemyUserDatabase[User, uuid.UUID], Depends(get_user_db)],
) -> AsyncIterator[UserManager]:
    yield UserManager(user_db)


bearer_transport = BearerTransport(tokenUrl="auth/jwt/login")


def get_jwt_strategy() -> JWTStrategy[User, uuid.UUID]:
    return JWTStrategy(secret=SECRET, lifetime_seconds=3600)


auth_backend = AuthenticationBackend(
    name="jwt", transport=bearer_transport, get_strategy=get_jwt_strategy
)
fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [auth_backend])
current_active_user = fastapi_users.current_user(active=True)


async def create_db_and_user() -> None:
    """The table, then the bench's user through the user manager (fastapi-users' "create a
    user programmatically" recipe), so its password is hashed as a registration hashes it."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    email, password = os.environ["BENCH_PEER_EMAIL"], os.environ["BENCH_PEER_PASSWORD"]
    async with async_session_maker() as session:
        manager = UserManager(SQLAlchemyUserDatabase(session, User))
        with contextlib.suppress(UserAlreadyExists):
            await manager.create(UserCreate(email=email, password=password))


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    await create_db_and_user()
    yield
    await engine.dispose()


def app() -> FastAPI:
    application = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    application.include_router(fastapi_users.get_auth_router(auth_backend), prefix="/auth/jwt")

    @application.get("/me")
    async def me(user: Annotated[User, Depends(current_active_user)]) -> UserRead:
        return UserRead.model_validate(user)

    return application


def main() -> None:
    parser = argparse.ArgumentParser(description="serve the fastapi-users peer")
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run("bench.peer_fastapi_users:app", factory=True, host="127.0.0.1", port=port,
                workers=1, http="httptools", loop="auto", ws="none", access_log=False,
                log_config=None, server_header=False, proxy_headers=False)


if __name__ == "__main__":
    main()
