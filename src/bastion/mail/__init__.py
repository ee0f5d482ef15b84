"""Mail through an outbox: requests queue mails in their own transaction
(``outbox.enqueue_mail``), a background ``sender.MailSender`` in every process delivers them
through a ``transport`` (SMTP, or ``.eml`` files in development), at least once."""
