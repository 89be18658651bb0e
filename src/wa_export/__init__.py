"""wa-export: WhatsApp messages from MongoDB to Excel, by email, every 15 minutes."""

__version__ = "0.1.0"
