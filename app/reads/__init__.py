"""The read side: session trees and analytics, computed from what the database keeps."""
