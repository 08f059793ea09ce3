"""The IdP's pages: a login form, and DOT's endpoints under /o/ (so the
issuer is http://127.0.0.1:PORT/o)."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
]
