from django.urls import path

from . import message_views, views

urlpatterns = [
    path("auth/register/", views.RegisterView.as_view(), name="register"),
    path("auth/token/", views.TokenView.as_view(), name="token"),
    path("auth/token/refresh/", views.TokenRefresh.as_view(), name="token-refresh"),
    path("channels/<str:channel>/messages/", views.HistoryView.as_view(), name="history"),
    path("channels/", message_views.ChannelsView.as_view(), name="channels"),
    path("messages/<int:message_id>/", message_views.MessageView.as_view(), name="message"),
    path("messages/<int:message_id>/readers/", message_views.ReadersView.as_view(), name="message-readers"),
    path("messages/search/", views.MessageSearchView.as_view(), name="message-search"),
    path("topics/", views.TopicsView.as_view(), name="topics"),
    path("topics/<str:name>/members/", views.TopicMembersView.as_view(), name="topic-members"),
]
