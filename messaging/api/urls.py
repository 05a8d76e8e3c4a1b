from django.urls import path

from . import views

urlpatterns = [
    path("auth/register/", views.RegisterView.as_view(), name="register"),
    path("auth/token/", views.TokenView.as_view(), name="token"),
    path("auth/token/refresh/", views.TokenRefresh.as_view(), name="token-refresh"),
    path("channels/<str:channel>/messages/", views.HistoryView.as_view(), name="history"),
    path("topics/", views.TopicsView.as_view(), name="topics"),
    path("topics/<str:name>/members/", views.TopicMembersView.as_view(), name="topic-members"),
]
